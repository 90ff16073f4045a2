#!/usr/bin/env python3
"""perf/tools/jwt-tokens.py: RS256 tokens for the `edge` scenario of perf/compare.sh.

    jwt-tokens.py DIR COUNT [--issuer perf] [--audience dispatch] [--ttl 86400]

DIR must already hold the key pair that compare.sh makes with the openssl CLI:
DIR/jwt.key.pem (RSA 2048 private key, PKCS#8 PEM) and DIR/jwt.pub.pem (its public key,
SubjectPublicKeyInfo PEM). This writes:

    DIR/tokens.txt        COUNT valid tokens, one a line: sub "user-<i>" (i from 0), iss, aud
                          (a string), exp = now + ttl. Header {"alg":"RS256","typ":"JWT"}.
    DIR/bad-expired.jwt   a valid signature over exp = now - 1 hour
    DIR/bad-forged.jwt    the claims of user-0, signed with another RSA key
    DIR/bad-issuer.jwt    a valid signature over iss = "<issuer>-not"
    DIR/bad-audience.jwt  a valid signature over aud = "<audience>-not"
    DIR/bad-alg.jwt       alg HS256, HMAC-SHA-256 keyed with the public key's PEM bytes (the
                          algorithm-confusion attack: a verifier must refuse it)

The bad ones let compare.sh prove that each proxy really verifies (signature, exp, iss, aud,
alg) before it measures it. Signing needs the `cryptography` package (Debian:
python3-cryptography); an RS256 signature with it costs about 1 ms, so 10,000 tokens take
seconds (spread over the cores with a process pool). Claims carry no `nbf` or `iat`, so
HAProxy's rules (perf/peers/haproxy-edge.cfg) and Dispatch check the same claims.

Only the standard library and `cryptography`; nothing is written outside DIR.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
except ImportError:
    sys.exit("jwt-tokens.py: the python3 'cryptography' package is missing (apt-get install python3-cryptography)")


def b64url(data: bytes) -> str:
    """RFC 7515 §2: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj) -> str:
    # Compact JSON, as every issuer writes it; the bytes signed are these exact bytes.
    return b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


HEADER_RS256 = segment({"alg": "RS256", "typ": "JWT"})

# Set in each pool worker by _init (a key object does not pickle).
_KEY = None


def _init(pem: bytes) -> None:
    global _KEY
    _KEY = serialization.load_pem_private_key(pem, password=None)


def sign_rs256(key, claims) -> str:
    signing_input = f"{HEADER_RS256}.{segment(claims)}".encode("ascii")
    # RFC 7518 §3.3: RS256 is RSASSA-PKCS1-v1_5 with SHA-256.
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def _sign_range(args):
    start, stop, issuer, audience, exp = args
    return [
        sign_rs256(_KEY, {"sub": f"user-{i}", "iss": issuer, "aud": audience, "exp": exp})
        for i in range(start, stop)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="RS256 tokens for perf/compare.sh SCENARIO=edge")
    parser.add_argument("dir")
    parser.add_argument("count", type=int)
    parser.add_argument("--issuer", default="perf")
    parser.add_argument("--audience", default="dispatch")
    parser.add_argument("--ttl", type=int, default=86400, help="seconds until exp")
    args = parser.parse_args()
    if args.count < 1:
        sys.exit("jwt-tokens.py: COUNT must be at least 1")

    with open(os.path.join(args.dir, "jwt.key.pem"), "rb") as f:
        private_pem = f.read()
    with open(os.path.join(args.dir, "jwt.pub.pem"), "rb") as f:
        public_pem = f.read()
    key = serialization.load_pem_private_key(private_pem, password=None)
    # The pair must match, or every token would fail for a reason no proxy would name.
    derived = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if derived.strip() != public_pem.strip():
        sys.exit("jwt-tokens.py: jwt.pub.pem is not the public half of jwt.key.pem")

    now = int(time.time())
    exp = now + args.ttl
    workers = max(1, min(os.cpu_count() or 1, 8))
    chunk = (args.count + workers - 1) // workers
    jobs = [
        (start, min(start + chunk, args.count), args.issuer, args.audience, exp)
        for start in range(0, args.count, chunk)
    ]
    if len(jobs) == 1:
        _init(private_pem)
        parts = [_sign_range(jobs[0])]
    else:
        with ProcessPoolExecutor(len(jobs), initializer=_init, initargs=(private_pem,)) as pool:
            parts = list(pool.map(_sign_range, jobs))
    tokens = [t for part in parts for t in part]
    assert len(tokens) == args.count
    with open(os.path.join(args.dir, "tokens.txt"), "w") as f:
        f.write("\n".join(tokens))
        f.write("\n")

    claims = {"sub": "user-0", "iss": args.issuer, "aud": args.audience, "exp": exp}
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    confused_input = (
        segment({"alg": "HS256", "typ": "JWT"}) + "." + segment(claims)
    ).encode("ascii")
    confused = hmac.new(public_pem, confused_input, hashlib.sha256).digest()
    bad = {
        "bad-expired.jwt": sign_rs256(key, dict(claims, exp=now - 3600)),
        "bad-forged.jwt": sign_rs256(other, claims),
        "bad-issuer.jwt": sign_rs256(key, dict(claims, iss=args.issuer + "-not")),
        "bad-audience.jwt": sign_rs256(key, dict(claims, aud=args.audience + "-not")),
        "bad-alg.jwt": f"{confused_input.decode('ascii')}.{b64url(confused)}",
    }
    for name, token in bad.items():
        with open(os.path.join(args.dir, name), "w") as f:
            f.write(token + "\n")


if __name__ == "__main__":
    main()

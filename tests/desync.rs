//! Upstream desynchronisation (RFC 9112 §9.3, §11.2): bytes an upstream sends outside any
//! exchange (an unsolicited second response, the answer to a request body it misread as a
//! request) must never be taken as the response to a later request, on any client connection.

mod support;

use support::upstream_misbehave::{ok, Exchange, Scripted};
use support::*;

/// A gateway on `workers` workers with one catch-all route to `url`, no retries.
fn gateway_to(url: &str, workers: usize) -> Gateway {
    Gateway::start(&format!(
        "[server]\nworkers = {workers}\n\n[upstreams.app]\nendpoints = [\"{url}\"]\nretries = 0\n\n\
         [routes.all]\npaths = [\"/\"]\nupstream = \"app\"\n"
    ))
}

/// Answers every request with `own:<target>`, then ~10 ms later writes a second, unsolicited
/// response (`SMUGGLED`) on the same connection, and counts event 0 once it is written.
fn stray_response_upstream() -> Scripted {
    Scripted::start(|x: &mut Exchange| {
        while let Some(head) = x.read_head() {
            if x.read_body(head.content_length()).is_err() {
                return;
            }
            let answered = x.write(&ok(&format!("own:{}", head.target)));
            std::thread::sleep(std::time::Duration::from_millis(10));
            let _ = x.write(&ok("SMUGGLED"));
            x.mark(0);
            if !answered {
                return;
            }
        }
    })
}

/// Sends a primer and then 48 follow-ups, alternating between two client connections, each
/// sent once the upstream has written its stray response for the exchange before; every one
/// must get its own response.
fn every_follow_up_gets_its_own_response(workers: usize) {
    let up = stray_response_upstream();
    let gw = gateway_to(&up.url(), workers);
    let mut clients = [Client::connect(gw.addr()), Client::connect(gw.addr())];

    let r = clients[0].request(&Req::get("/primer"));
    assert_eq!((r.status, r.text().as_str()), (200, "own:/primer"));
    up.await_marks(0, 1);
    for i in 0..48 {
        let target = format!("/follow/{i}");
        let r = clients[i % 2].request(&Req::get(&target));
        assert_eq!(
            (r.status, r.text()),
            (200, format!("own:{target}")),
            "follow-up {i} (client {}) got another exchange's response",
            i % 2
        );
        // The stray bytes are in the gateway's socket before the next request leaves.
        up.await_marks(0, i + 2);
    }
}

/// Stray upstream response poisoned the next request on one worker (response queue poisoning).
#[test]
fn stray_upstream_response_never_answers_a_later_request_one_worker() {
    every_follow_up_gets_its_own_response(1);
}

/// Stray upstream response poisoned the next request with two workers (response queue poisoning).
#[test]
fn stray_upstream_response_never_answers_a_later_request_two_workers() {
    every_follow_up_gets_its_own_response(2);
}

/// A CL.0 upstream's answer to a POST body it read as a request answered other clients' GETs.
#[test]
fn cl0_upstream_answer_to_a_smuggled_body_never_reaches_another_client() {
    // Ignores Content-Length (reads heads only), so a POST's body is parsed as the next
    // request; each answer takes ~5 ms, so the second one arrives after the first was relayed.
    let up = Scripted::start(|x: &mut Exchange| {
        while let Some(head) = x.read_head() {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let answered = x.write(&ok(&format!("own:{}", head.target)));
            x.mark(0);
            if !answered {
                return;
            }
        }
    });
    let gw = gateway_to(&up.url(), 1);
    let mut poster = Client::connect(gw.addr());
    let mut others = [Client::connect(gw.addr()), Client::connect(gw.addr())];
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: internal\r\n\r\n";
    let mut answers = 0;
    for round in 0..8 {
        let target = format!("/upload/{round}");
        let r = poster.request(&Req::post(&target, smuggled));
        assert_eq!((r.status, r.text()), (200, format!("own:{target}")));
        // The upstream answered the POST and the smuggled GET.
        answers += 2;
        up.await_marks(0, answers);
        for (n, c) in others.iter_mut().enumerate() {
            let target = format!("/client{n}/{round}");
            let r = c.request(&Req::get(&target));
            assert_eq!(
                (r.status, r.text()),
                (200, format!("own:{target}")),
                "round {round}: client {n} got the smuggled request's answer"
            );
            answers += 1;
            up.await_marks(0, answers);
        }
    }
    assert!(
        up.targets().iter().any(|t| t == "GET /smuggled"),
        "the upstream never misread a body as a request: the test proved nothing"
    );
}

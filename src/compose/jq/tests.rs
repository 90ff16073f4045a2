//! The jq engine's contract: compile errors at the failing token, first output, no output,
//! runtime errors, exact values both ways, the spec's programs.

use serde_json::{json, Value};

use super::{BodyError, CompileError, Program};

fn run(program: &str, input: Value) -> Result<Option<Value>, String> {
    Program::compile(program, &[]).unwrap().run(input, &[])
}

fn compile_err(program: &str) -> CompileError {
    Program::compile(program, &["now"]).unwrap_err()
}

#[test]
fn compile_errors_give_the_byte_offset_of_the_failing_token() {
    // Parse error: `}` where a term is expected.
    let e = compile_err("{a: .a, b: }");
    assert_eq!(e.offset, 11, "{e:?}");
    assert!(e.message.contains("expected term"), "{e:?}");
    // Lex error: an unclosed string is reported where its closing quote is missing.
    let e = compile_err(".a | \"abc");
    assert_eq!(e.offset, 9, "{e:?}");
    assert!(e.message.contains("closing quote"), "{e:?}");
    // Unknown filter: at its name.
    let e = compile_err(".a | nosuchfilter(1)");
    assert_eq!(e.offset, 5, "{e:?}");
    assert!(e.message.contains("nosuchfilter/1"), "{e:?}");
    // Unknown variable: `$then` is not `$now`.
    let e = compile_err("{at: $then}");
    assert_eq!(e.offset, 5, "{e:?}");
    assert!(e.message.contains("variable"), "{e:?}");
    // The program ends too early: the offset is the text's length.
    let e = compile_err(".a |");
    assert_eq!(e.offset, 4, "{e:?}");
    assert!(e.message.contains("end of program"), "{e:?}");
    // Modules cannot be loaded from a gateway's config: reported at the path, inside its quotes.
    let e = compile_err("import \"x\" as x; .");
    assert_eq!(e.offset, 8, "{e:?}");
    assert!(e.message.contains("modules"), "{e:?}");
}

#[test]
fn now_is_bound_to_the_value_given_at_run() {
    let p = Program::compile("{at: $now, x: .x}", &["now"]).unwrap();
    let now = super::now_rfc3339();
    let out = p.run(json!({"x": 1}), &[json!(now)]).unwrap().unwrap();
    assert_eq!(out, json!({"at": now, "x": 1}));
    // RFC 3339 UTC with milliseconds: 2026-12-06T15:04:05.123Z.
    let b = now.as_bytes();
    assert_eq!(now.len(), 24, "{now}");
    assert_eq!(
        (b[4], b[7], b[10], b[13], b[16], b[19], b[23]),
        (b'-', b'-', b'T', b':', b':', b'.', b'Z')
    );
}

#[test]
fn several_variables_bind_in_the_order_given() {
    let p = Program::compile("[$a, $b, $c]", &["a", "b", "c"]).unwrap();
    let out = p
        .run(json!(null), &[json!(1), json!("two"), json!([3])])
        .unwrap();
    assert_eq!(out, Some(json!([1, "two", [3]])));
    // A count mismatch is an error, not a run with unbound names.
    assert!(p.run(json!(null), &[json!(1)]).is_err());
}

#[test]
fn the_first_output_is_the_result() {
    assert_eq!(run(".[]", json!([1, 2, 3])), Ok(Some(json!(1))));
    // An error after the first output is never reached.
    assert_eq!(run("1, error(\"late\")", json!(null)), Ok(Some(json!(1))));
}

#[test]
fn no_output_is_none() {
    assert_eq!(run("empty", json!({})), Ok(None));
    assert_eq!(run(".[] | select(. > 5)", json!([1, 2])), Ok(None));
}

#[test]
fn runtime_errors_are_messages() {
    assert_eq!(run("error(\"x\")", json!(null)), Err("x".into()));
    let e = run(".a.b", json!({"a": "str"})).unwrap_err();
    assert!(e.contains("cannot index"), "{e}");
    let e = run("error({code: 1})", json!(null)).unwrap_err();
    assert!(e.contains("\"code\""), "{e}");
    // `halt` would exit a jq process: here it ends the run with an error.
    let e = run("halt", json!(null)).unwrap_err();
    assert!(e.contains("halt"), "{e}");
}

#[test]
fn error_messages_quoting_a_large_value_are_cut() {
    let big = "x".repeat(10_000);
    let e = run(".a.b", json!({ "a": big })).unwrap_err();
    assert!(
        e.len() <= super::MAX_MESSAGE + '…'.len_utf8(),
        "{}",
        e.len()
    );
    assert!(e.ends_with('…'), "{e}");
}

#[test]
fn integers_strings_and_key_order_cross_exactly() {
    let input = json!({
        "big": i64::MAX, "neg": i64::MIN, "u": u64::MAX, "f": 1.5,
        "s": "héllo \"q\"", "z": 1, "a": {"y": [1, {"b": null, "a": true}], "x": 2}
    });
    let out = run(".", input.clone()).unwrap().unwrap();
    assert_eq!(out, input);
    let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
    // serde_json's map (no preserve_order) sorts; jaq keeps its own order: both ways agree
    // with the input as serde_json holds it.
    let expected: Vec<_> = input.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, expected);
    // Integer arithmetic stays integer.
    assert_eq!(
        run(".n + 1", json!({"n": 9_007_199_254_740_993i64})),
        Ok(Some(json!(9_007_199_254_740_994i64)))
    );
}

#[test]
fn run_body_keeps_the_key_order_jq_gives() {
    let p = Program::compile("{z: .a, a: .z, m: .m}", &[]).unwrap();
    let out = p
        .run_body(br#"{"a": 1, "z": 2, "m": 12345678901234567}"#, &[])
        .unwrap()
        .unwrap();
    assert_eq!(out, br#"{"z":1,"a":2,"m":12345678901234567}"#);
}

#[test]
fn run_body_tells_bad_input_from_a_failing_program() {
    let p = Program::compile(".a.b", &[]).unwrap();
    assert!(matches!(
        p.run_body(b"{not json", &[]),
        Err(BodyError::NotJson(_))
    ));
    assert!(matches!(p.run_body(b"", &[]), Err(BodyError::NotJson(_))));
    assert!(matches!(
        p.run_body(b"{} {}", &[]),
        Err(BodyError::NotJson(_))
    ));
    assert!(matches!(
        p.run_body(br#"{"a": "s"}"#, &[]),
        Err(BodyError::Failed(_))
    ));
    let empty = Program::compile("empty", &[]).unwrap();
    assert_eq!(empty.run_body(b"{}", &[]), Ok(None));
}

#[test]
fn non_finite_numbers_come_out_as_jq_prints_them() {
    assert_eq!(run("nan", json!(null)), Ok(Some(Value::Null)));
    assert_eq!(run("infinite", json!(null)), Ok(Some(json!(f64::MAX))));
    assert_eq!(run("1.25", json!(null)), Ok(Some(json!(1.25))));
    let p = Program::compile("[nan, -infinite, 0.5]", &[]).unwrap();
    let out = p.run_body(b"null", &[]).unwrap().unwrap();
    let min = serde_json::to_string(&f64::MIN).unwrap();
    assert_eq!(out, format!("[null,{min},0.5]").as_bytes());
}

#[test]
fn output_nested_too_deep_is_an_error_not_a_stack_overflow() {
    let p = Program::compile("reduce range(1000) as $i (0; [.])", &[]).unwrap();
    let e = p.run(json!(null), &[]).unwrap_err();
    assert!(e.contains("deeper"), "{e}");
    assert!(matches!(p.run_body(b"null", &[]), Err(BodyError::Failed(m)) if m.contains("deeper")));
}

#[test]
fn non_string_object_keys_are_an_error() {
    // jaq accepts any key in an object; JSON does not.
    let out = run("{(1): 2}", json!(null));
    assert!(out.is_err(), "{out:?}");
}

#[test]
fn the_spec_programs_give_the_documented_shapes() {
    let compact = "{transactions: [.transactions[] | {id, amount, merchant: .merchantName, date: .createdAt}]}";
    let input = json!({"transactions": [
        {"id": "t1", "amount": 12.5, "merchantName": "Cafe", "createdAt": "2026-01-02", "internal": "x"},
        {"id": "t2", "amount": 7, "merchantName": "Shop", "createdAt": "2026-01-03"}
    ], "cursor": "abc"});
    assert_eq!(
        run(compact, input),
        Ok(Some(json!({"transactions": [
            {"id": "t1", "amount": 12.5, "merchant": "Cafe", "date": "2026-01-02"},
            {"id": "t2", "amount": 7, "merchant": "Shop", "date": "2026-01-03"}
        ]})))
    );

    let v1_to_v2 = r#"{sourceAccountId: .from_account, destinationAccountId: .to_account, transferAmount: {value: .amount, currency: "USD"}, initiatedAt: $now}"#;
    let p = Program::compile(v1_to_v2, &["now"]).unwrap();
    let now = json!("2026-12-06T15:00:00.000Z");
    assert_eq!(
        p.run(
            json!({"from_account": "A1", "to_account": "B2", "amount": 100}),
            std::slice::from_ref(&now)
        ),
        Ok(Some(json!({
            "sourceAccountId": "A1", "destinationAccountId": "B2",
            "transferAmount": {"value": 100, "currency": "USD"}, "initiatedAt": now
        })))
    );

    let v2_to_v1 = "{id: .transferId, from_account: .sourceAccountId, to_account: .destinationAccountId, amount: .transferAmount.value, status, completed_at: .completedAt}";
    assert_eq!(
        run(
            v2_to_v1,
            json!({
                "transferId": "tr_1", "sourceAccountId": "A1", "destinationAccountId": "B2",
                "transferAmount": {"value": 100, "currency": "USD"}, "status": "done",
                "completedAt": "2026-12-06T15:00:01Z"
            })
        ),
        Ok(Some(json!({
            "id": "tr_1", "from_account": "A1", "to_account": "B2", "amount": 100,
            "status": "done", "completed_at": "2026-12-06T15:00:01Z"
        })))
    );

    // Aggregates: `select` of a call's result and `shape` over the object of results.
    assert_eq!(
        run(".transactions", json!({"transactions": [1, 2]})),
        Ok(Some(json!([1, 2])))
    );
    assert_eq!(
        run(
            "{order, user, products, shipment}",
            json!({
                "order": {"id": 1}, "user": {"n": "a"}, "products": [], "shipment": null, "reviews": []
            })
        ),
        Ok(Some(
            json!({"order": {"id": 1}, "user": {"n": "a"}, "products": [], "shipment": null})
        ))
    );
}

#[test]
fn a_program_is_shared_across_threads() {
    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    let p = Program::compile(".x + 1", &[]).unwrap();
    send_sync(&p);
    let q = p.clone();
    let out = std::thread::spawn(move || q.run(json!({"x": 1}), &[]))
        .join()
        .unwrap();
    assert_eq!(out, Ok(Some(json!(2))));
}

#[test]
fn the_jq_standard_library_is_there() {
    assert_eq!(run("map(.*2) | add", json!([1, 2, 3])), Ok(Some(json!(12))));
    assert_eq!(run("test(\"^a.c$\")", json!("abc")), Ok(Some(json!(true))));
    assert_eq!(run("@base64", json!("hi")), Ok(Some(json!("aGk="))));
    assert_eq!(run("floor", json!(2.7)), Ok(Some(json!(2))));
    assert_eq!(
        run("todate", json!(0)),
        Ok(Some(json!("1970-01-01T00:00:00Z")))
    );
    assert_eq!(
        run("to_entries | map(.key)", json!({"b": 1, "a": 2})),
        Ok(Some(json!(["a", "b"])))
    );
}

/// jaq's own answer for `program` on `input`, bypassing the path fast path.
fn by_jaq(program: &Program, input: &Value) -> Result<Option<Value>, String> {
    match program.first(super::value_to_val(input), Vec::new())? {
        None => Ok(None),
        Some(out) => super::val_to_value(&out, 0).map(Some),
    }
}

/// Path-only programs walk the `serde_json::Value` themselves: every answer (values, nulls for
/// missing keys and indexes, errors) is jaq's, bit for bit.
#[test]
fn path_programs_answer_exactly_as_jaq_does() {
    let inputs = [
        json!({"a": {"b": [1, {"c": "x"}, [2, 3]], "n": null}, "transactions": [{"id": 1}],
               "k-y": true, "if": 4, "_u1": 1.5, "big": 18446744073709551615u64}),
        json!([10, [20, 21], {"a": 1}]),
        json!(null),
        json!("text"),
        json!(12),
        json!(true),
        json!({}),
        json!([]),
    ];
    let programs = [
        ".",
        " . ",
        ".a",
        ".a.b",
        ".a.b[0]",
        ".a.b[1].c",
        ".a.b[2][1]",
        ".a.b[-1]",
        ".a.b[-3]",
        ".a.b[-4]",
        ".a.b[3]",
        ".a.b[99]",
        ".a.n",
        ".a.n.x",
        ".a.n[3]",
        ".missing",
        ".missing.deeper[2]",
        ".transactions",
        ".transactions[0].id",
        ".[0]",
        ".[1][0]",
        ".[-1]",
        ".[2].a",
        ".[0].a",
        ".a[0]",
        ".[\"k-y\"]",
        ".\"k-y\"",
        ".[\"a\"].b",
        ".if",
        "._u1",
        ".big",
        ".a.b.c",
        ".a.b[1].c.d",
        ".a.b[1].c[0]",
        ".[-0]",
        ".a.[0]",
        ".a.b.[1]",
    ];
    let mut fast = 0;
    for text in programs {
        let Ok(p) = Program::compile(text, &[]) else {
            continue;
        };
        if p.compiled.path.is_some() {
            fast += 1;
        }
        for input in &inputs {
            assert_eq!(
                p.run(input.clone(), &[]),
                by_jaq(&p, input),
                "{text} on {input}"
            );
        }
    }
    assert!(fast >= 30, "only {fast} programs took the fast path");
}

/// Only a path alone takes the fast path: anything jq computes (iteration, `?`, pipes,
/// slices, strings with escapes) is jaq's.
#[test]
fn only_paths_take_the_fast_path() {
    for text in [".", ".a", ".a.b[0]", ".[\"x y\"]", ".[-2]", ".\"q\""] {
        let p = Program::compile(text, &[]).unwrap();
        assert!(p.compiled.path.is_some(), "{text}");
    }
    for text in [
        ".[]",
        ".a?",
        ".a | .b",
        ".[1:2]",
        ".[\"a\\\"b\"]",
        "..",
        ".a[]",
        ".a.b?",
        ".[\"\\(1)\"]",
        ".[1.5]",
        ".[+1]",
        ".[01]",
        ". a",
        ".a as $x | $x",
        "(.a)",
        ".a,.b",
        "length",
    ] {
        if let Ok(p) = Program::compile(text, &[]) {
            assert!(p.compiled.path.is_none(), "{text}");
        }
    }
}

/// A path's output too deep for [`super::MAX_DEPTH`] is the same error as through jaq.
#[test]
fn a_path_output_too_deep_is_jaqs_error() {
    let mut deep = json!(1);
    for _ in 0..=super::MAX_DEPTH {
        deep = json!([deep]);
    }
    let p = Program::compile(".a", &[]).unwrap();
    let input = json!({"a": deep});
    let out = p.run(input.clone(), &[]);
    assert!(out.is_err(), "{out:?}");
    assert_eq!(out, by_jaq(&p, &input));
    // One level less fits.
    let p = Program::compile(".a[0]", &[]).unwrap();
    assert!(p.run(input, &[]).unwrap().is_some());
}

/// `env` would expose the gateway's environment (admin token, JWT secrets) to a body transform.
#[test]
fn env_is_not_available_to_programs() {
    let err = Program::compile("{secret: env.HOME}", &[]).unwrap_err();
    assert!(err.message.contains("env"), "{err:?}");
    assert!(Program::compile("{secret: $ENV}", &[]).is_err());
}

/// `keys` is the path of object keys of a program that is one, and nothing else.
#[test]
fn keys_are_given_for_key_paths_alone() {
    let keys = |program: &str| {
        Program::compile(program, &[])
            .unwrap()
            .keys()
            .map(|k| k.to_vec())
    };
    let owned = |ks: &[&str]| Some(ks.iter().map(|k| k.to_string()).collect::<Vec<_>>());
    assert_eq!(keys(".transactions"), owned(&["transactions"]));
    assert_eq!(keys(".a.b"), owned(&["a", "b"]));
    assert_eq!(keys(r#"."a b".c"#), owned(&["a b", "c"]));
    for program in [".", ".a[0]", ".a | .b", ".a?", "{a}", ".[\"x\"][1]"] {
        assert_eq!(keys(program), None, "{program}");
    }
    let with_var = Program::compile(".a", &["now"]).unwrap();
    assert_eq!(with_var.keys(), None);
}

/// Objects built of paths are built without jaq: every answer (values, nulls, key order,
/// errors) is jaq's, bit for bit.
#[test]
fn object_of_paths_programs_answer_exactly_as_jaq_does() {
    let inputs = [
        json!({"a": {"b": [1, {"c": "x"}, [2, 3]], "n": null}, "transactions": [{"id": 1}],
               "k-y": true, "_u1": 1.5, "profile": {"name": "Ada"}, "balance": {"available": 3},
               "prefs": [1]}),
        json!([10, [20, 21], {"a": 1}]),
        json!(null),
        json!("text"),
        json!({}),
    ];
    let programs = [
        "{a}",
        "{}",
        "{ }",
        "{a: .a.b}",
        "{x: .a.b[1].c, y: .missing, z: .}",
        "{\"k y\": .a, b: .\"k-y\"}",
        "{a: .a, a: .transactions}",
        " { a : .a.n , b:.[0] } ",
        "{a: .a.b[1].c.d}",
        "{user: .profile.name, balance: .balance.available, txs: .transactions, prefs}",
        "{a, transactions}",
        "{zz: ._u1, aa: .a.n.x, mm: .[2].a}",
        "{a: .[\"a\"].b[-1]}",
    ];
    let mut fast = 0;
    for text in programs {
        let p = Program::compile(text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"));
        if p.compiled.object.is_some() {
            fast += 1;
        }
        for input in &inputs {
            assert_eq!(
                p.run(input.clone(), &[]),
                by_jaq(&p, input),
                "{text} on {input}"
            );
        }
    }
    assert_eq!(
        fast,
        programs.len(),
        "every program above builds without jaq"
    );
    for text in [
        "{a: .a | .b}",
        "{(.a): 1}",
        "{a: 1}",
        "{a: .a?}",
        "{a: .a[]}",
        "{$__loc__}",
        "{\"a\"}",
        "{a: .a, b: (.b)}",
        "{a: .x,}",
        "{a: .b} | .a",
        "{a: .b}.a",
    ] {
        if let Ok(p) = Program::compile(text, &[]) {
            assert!(p.compiled.object.is_none(), "{text}");
        }
    }
}

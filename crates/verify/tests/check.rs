//! The checker on hand-written histories: a clean one passes, and each anomaly, injected
//! into it, is found and counted exactly once (a checker that cannot fail is worthless).

use verify::{check, read_history, Report};

/// A clean run: an idempotent producer writes four records to t-0 and two to t-1, a group
/// consumer reads everything and commits, an assigned consumer reads t-0 twice around a seek.
const CLEAN: &str = r#"
{"type":"producer","client":"p","time":1,"topic":"t","library":"test","idempotent":true,"acks":"all","compression":"none"}
{"type":"send","client":"p","time":2,"topic":"t","partition":0,"value":"p-0"}
{"type":"send","client":"p","time":3,"topic":"t","partition":0,"value":"p-1"}
{"type":"send","client":"p","time":4,"topic":"t","partition":0,"value":"p-2"}
{"type":"send","client":"p","time":5,"topic":"t","partition":0,"value":"p-3"}
{"type":"send","client":"p","time":6,"topic":"t","partition":1,"value":"p-4"}
{"type":"send","client":"p","time":7,"topic":"t","partition":1,"value":"p-5"}
{"type":"send","client":"p","time":8,"topic":"t","partition":1,"value":"p-6"}
{"type":"produce","client":"p","time":10,"topic":"t","partition":0,"value":"p-0","outcome":"ok","offset":0}
{"type":"produce","client":"p","time":11,"topic":"t","partition":0,"value":"p-1","outcome":"ok","offset":1}
{"type":"produce","client":"p","time":12,"topic":"t","partition":0,"value":"p-2","outcome":"ok","offset":2}
{"type":"produce","client":"p","time":13,"topic":"t","partition":0,"value":"p-3","outcome":"ok","offset":3}
{"type":"produce","client":"p","time":14,"topic":"t","partition":1,"value":"p-4","outcome":"ok","offset":0}
{"type":"produce","client":"p","time":15,"topic":"t","partition":1,"value":"p-5","outcome":"ok","offset":1}
{"type":"produce","client":"p","time":16,"topic":"t","partition":1,"value":"p-6","outcome":"unknown","error":"timed out"}
{"type":"consumer","client":"g","time":20,"topic":"t","library":"test","group":"grp"}
{"type":"assign","client":"g","time":21,"topic":"t","partitions":[0,1]}
{"type":"read","client":"g","time":22,"topic":"t","partition":0,"offset":0,"value":"p-0"}
{"type":"read","client":"g","time":23,"topic":"t","partition":0,"offset":1,"value":"p-1"}
{"type":"commit","client":"g","time":25,"sent":24,"topic":"t","partition":0,"offset":2,"group":"grp","outcome":"ok"}
{"type":"assign","client":"g","time":26,"topic":"t","partitions":[0,1]}
{"type":"read","client":"g","time":27,"topic":"t","partition":0,"offset":2,"value":"p-2"}
{"type":"read","client":"g","time":28,"topic":"t","partition":0,"offset":3,"value":"p-3"}
{"type":"read","client":"g","time":29,"topic":"t","partition":1,"offset":0,"value":"p-4"}
{"type":"read","client":"g","time":30,"topic":"t","partition":1,"offset":1,"value":"p-5"}
{"type":"read","client":"g","time":31,"topic":"t","partition":1,"offset":2,"value":"p-6"}
{"type":"commit","client":"g","time":33,"sent":32,"topic":"t","partition":0,"offset":4,"group":"grp","outcome":"ok"}
{"type":"commit","client":"g","time":35,"sent":34,"topic":"t","partition":1,"offset":3,"group":"grp","outcome":"ok"}
{"type":"consumer","client":"a","time":40,"topic":"t","library":"test","group":null}
{"type":"assign","client":"a","time":41,"topic":"t","partitions":[0]}
{"type":"read","client":"a","time":42,"topic":"t","partition":0,"offset":0,"value":"p-0"}
{"type":"read","client":"a","time":43,"topic":"t","partition":0,"offset":1,"value":"p-1"}
{"type":"seek","client":"a","time":44,"topic":"t","partition":0,"offset":0}
{"type":"read","client":"a","time":45,"topic":"t","partition":0,"offset":0,"value":"p-0"}
{"type":"read","client":"a","time":46,"topic":"t","partition":0,"offset":1,"value":"p-1"}
{"type":"read","client":"a","time":47,"topic":"t","partition":0,"offset":2,"value":"p-2"}
{"type":"read","client":"a","time":48,"topic":"t","partition":0,"offset":3,"value":"p-3"}
"#;

fn run(text: &str) -> Report {
    let (events, cut) = read_history("test", text.as_bytes()).expect("history parses");
    check(&[("test".to_string(), events, cut)])
}

/// The clean history with `from` replaced by `to` (which must occur exactly once).
fn edited(from: &str, to: &str) -> Report {
    assert_eq!(CLEAN.matches(from).count(), 1, "{from} must occur once");
    run(&CLEAN.replacen(from, to, 1))
}

fn violations(r: &Report) -> Vec<(&'static str, u64)> {
    r.violations().into_iter().filter(|(_, n)| *n > 0).collect()
}

#[test]
fn a_clean_history_passes() {
    let r = run(CLEAN);
    assert!(r.passed(), "{}", r.to_table());
    assert_eq!(
        (r.sends, r.acknowledged, r.unknown, r.read, r.commits),
        (7, 6, 1, 13, 3)
    );
    assert_eq!((r.unverified, r.read_above_acknowledged, r.clients), (0, 1, 3));
}

#[test]
fn a_dropped_read_of_an_acknowledged_record_is_lost() {
    // Both consumers' reads of p-2 removed: acknowledged at offset 2, and reads reach 3.
    let text = CLEAN
        .lines()
        .filter(|l| !(l.contains(r#""type":"read""#) && l.contains(r#""value":"p-2""#)))
        .collect::<Vec<_>>()
        .join("\n");
    let r = run(&text);
    // The assigned consumer's reads now go 1, 3 over the acknowledged offset 2: a skip too.
    assert_eq!(violations(&r), vec![("lost", 1), ("poll_skips", 1)]);
    assert!(r.examples["lost"][0].contains("p-2"), "{:?}", r.examples);
}

#[test]
fn an_acknowledged_record_nobody_read_past_is_unverified_not_lost() {
    // Without the reads of p-3 (the last of t-0), nothing says whether it is there.
    let text = CLEAN
        .lines()
        .filter(|l| !(l.contains(r#""type":"read""#) && l.contains(r#""value":"p-3""#)))
        .collect::<Vec<_>>()
        .join("\n");
    let r = run(&text);
    assert!(r.passed(), "{}", r.to_table());
    assert_eq!(r.unverified, 1);
}

#[test]
fn a_record_nobody_sent_is_unexpected() {
    let r = run(&format!(
        "{CLEAN}\n{}",
        r#"{"type":"read","client":"z","time":60,"topic":"t","partition":0,"offset":9,"value":"ghost"}"#
    ));
    assert_eq!(violations(&r), vec![("unexpected", 1)]);
}

#[test]
fn an_idempotent_value_at_two_offsets_is_duplicated() {
    // The assigned consumer sees p-3 again at offset 4, where nothing else was written.
    let r = run(&format!(
        "{CLEAN}\n{}",
        r#"{"type":"read","client":"a","time":49,"topic":"t","partition":0,"offset":4,"value":"p-3"}"#
    ));
    assert_eq!(violations(&r), vec![("duplicated", 1)]);
    // The same from a producer without idempotence is allowed (a retry may write twice).
    let r = run(&format!(
        "{}\n{}",
        CLEAN.replace(r#""idempotent":true"#, r#""idempotent":false"#),
        r#"{"type":"read","client":"a","time":49,"topic":"t","partition":0,"offset":4,"value":"p-3"}"#
    ));
    assert!(r.passed(), "{}", r.to_table());
    assert_eq!(r.duplicated_non_idempotent, 1);
}

#[test]
fn two_values_at_one_offset_are_inconsistent() {
    // The assigned consumer reads p-1 where the producer was told p-2 went, and p-2 is read
    // there by the group consumer: offset 2 holds two values, and p-1 sits at two offsets.
    let r = edited(
        r#""time":47,"topic":"t","partition":0,"offset":2,"value":"p-2""#,
        r#""time":47,"topic":"t","partition":0,"offset":2,"value":"p-1""#,
    );
    assert_eq!(violations(&r), vec![("duplicated", 1), ("inconsistent_offsets", 1)]);
    assert!(r.examples["inconsistent_offsets"][0].contains("offset 2"));
}

#[test]
fn acknowledgements_out_of_send_order_are_an_order_violation() {
    // x sent before y, but y acknowledged (and read) at the lower offset.
    let history = r#"
{"type":"producer","client":"p","time":1,"topic":"t","library":"test","idempotent":true,"acks":"all","compression":"none"}
{"type":"send","client":"p","time":2,"topic":"t","partition":0,"value":"x"}
{"type":"send","client":"p","time":3,"topic":"t","partition":0,"value":"y"}
{"type":"produce","client":"p","time":4,"topic":"t","partition":0,"value":"y","outcome":"ok","offset":0}
{"type":"produce","client":"p","time":5,"topic":"t","partition":0,"value":"x","outcome":"ok","offset":1}
{"type":"read","client":"c","time":6,"topic":"t","partition":0,"offset":0,"value":"y"}
{"type":"read","client":"c","time":7,"topic":"t","partition":0,"offset":1,"value":"x"}
"#;
    let r = run(history);
    assert_eq!(violations(&r), vec![("order_violations", 1)]);
    assert!(
        r.examples["order_violations"][0].contains(r#""x" before "y""#),
        "{:?}",
        r.examples
    );
    // Kafka orders a producer's records only with idempotence (retries may reorder otherwise).
    let r = run(&history.replace(r#""idempotent":true"#, r#""idempotent":false"#));
    assert!(r.passed(), "{}", r.to_table());
}

#[test]
fn a_read_that_jumps_over_a_known_record_is_a_poll_skip() {
    let r = edited(
        r#"{"type":"read","client":"a","time":47,"topic":"t","partition":0,"offset":2,"value":"p-2"}
"#,
        "",
    );
    assert_eq!(violations(&r), vec![("poll_skips", 1)]);
    // A jump over offsets that hold nothing anyone saw (a transaction marker, a compacted
    // record) is not a skip.
    let r = run(r#"
{"type":"producer","client":"p","time":1,"topic":"t","library":"test","idempotent":true,"acks":"all","compression":"none"}
{"type":"send","client":"p","time":2,"topic":"t","partition":0,"value":"x"}
{"type":"send","client":"p","time":2,"topic":"t","partition":0,"value":"y"}
{"type":"produce","client":"p","time":3,"topic":"t","partition":0,"value":"x","outcome":"ok","offset":0}
{"type":"produce","client":"p","time":3,"topic":"t","partition":0,"value":"y","outcome":"ok","offset":5}
{"type":"read","client":"c","time":4,"topic":"t","partition":0,"offset":0,"value":"x"}
{"type":"read","client":"c","time":4,"topic":"t","partition":0,"offset":5,"value":"y"}
"#);
    assert!(r.passed(), "{}", r.to_table());
}

#[test]
fn reading_backwards_without_a_seek_is_non_monotonic() {
    let r = edited(
        r#"{"type":"seek","client":"a","time":44,"topic":"t","partition":0,"offset":0}"#,
        "",
    );
    assert_eq!(violations(&r), vec![("non_monotonic", 1)]);
    // The same record handed over twice in a row is a step back too.
    let r = edited(
        r#"{"type":"read","client":"g","time":23,"topic":"t","partition":0,"offset":1,"value":"p-1"}
"#,
        r#"{"type":"read","client":"g","time":23,"topic":"t","partition":0,"offset":1,"value":"p-1"}
{"type":"read","client":"g","time":23,"topic":"t","partition":0,"offset":1,"value":"p-1"}
"#,
    );
    assert_eq!(violations(&r), vec![("non_monotonic", 1)]);
}

#[test]
fn a_commit_below_an_earlier_acknowledged_commit_is_a_regression() {
    let r = run(&format!(
        "{CLEAN}\n{}",
        r#"{"type":"commit","client":"g2","time":51,"sent":50,"topic":"t","partition":0,"offset":2,"group":"grp","outcome":"ok"}"#
    ));
    assert_eq!(violations(&r), vec![("committed_regressions", 1)]);
    // Sent before the higher commit was answered: the two raced, and either order is allowed.
    let r = run(&format!(
        "{CLEAN}\n{}",
        r#"{"type":"commit","client":"g2","time":51,"sent":32,"topic":"t","partition":0,"offset":2,"group":"grp","outcome":"ok"}"#
    ));
    assert!(r.passed(), "{}", r.to_table());
    // Another group's commits are its own.
    let r = run(&format!(
        "{CLEAN}\n{}",
        r#"{"type":"commit","client":"g2","time":51,"sent":50,"topic":"t","partition":0,"offset":2,"group":"other","outcome":"ok"}"#
    ));
    assert!(r.passed(), "{}", r.to_table());
    // A failed commit is not a commit.
    let r = run(&format!(
        "{CLEAN}\n{}",
        r#"{"type":"commit","client":"g2","time":51,"sent":50,"topic":"t","partition":0,"offset":2,"group":"grp","outcome":"fail"}"#
    ));
    assert!(r.passed(), "{}", r.to_table());
}

#[test]
fn records_whose_produce_failed_may_be_read_or_missing() {
    // p-6's outcome was unknown and it was read: fine. Without the read: fine too.
    let r = edited(
        r#"{"type":"read","client":"g","time":31,"topic":"t","partition":1,"offset":2,"value":"p-6"}
"#,
        "",
    );
    assert!(r.passed(), "{}", r.to_table());
    assert_eq!(r.read_above_acknowledged, 0);
}

#[test]
fn histories_are_checked_together_across_files() {
    // The producer's lines in one file, the consumers' in another: same verdict as one file.
    let (producer, consumers): (Vec<&str>, Vec<&str>) = CLEAN.lines().partition(|l| l.contains(r#""client":"p""#));
    let (a, cut_a) = read_history("p.jsonl", producer.join("\n").as_bytes()).unwrap();
    let (b, cut_b) = read_history("c.jsonl", consumers.join("\n").as_bytes()).unwrap();
    let together = check(&[("p.jsonl".into(), a, cut_a), ("c.jsonl".into(), b, cut_b)]);
    let one = run(CLEAN);
    assert_eq!(together.to_json()["read"], one.to_json()["read"]);
    assert!(together.passed());
    assert_eq!(together.histories, 2);
}

#[test]
fn malformed_lines_are_refused_naming_the_line_except_a_last_line_cut_short() {
    let err = read_history("h", "{\"type\":\"read\",\"client\":\"c\",\"time\":1}\n".as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "h:1: a read event needs `topic`");
    let err = read_history(
        "h",
        "not json\n{\"type\":\"assign\",\"client\":\"c\",\"time\":1,\"topic\":\"t\",\"partitions\":[]}\n".as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("h:1: "), "{err}");
    // A killed client's last line, cut short: skipped and counted.
    let text = format!("{}\n{{\"type\":\"read\",\"cli", CLEAN.trim());
    let (events, cut) = read_history("h", text.as_bytes()).unwrap();
    assert_eq!(cut, 1);
    let r = check(&[("h".into(), events, cut)]);
    assert!(r.passed());
    assert_eq!(r.truncated_lines, 1);
}

#[test]
fn the_json_report_has_every_count_at_the_top_level() {
    let j = run(CLEAN).to_json();
    for key in [
        "acknowledged",
        "read",
        "lost",
        "unexpected",
        "duplicated",
        "inconsistent_offsets",
        "order_violations",
        "poll_skips",
        "non_monotonic",
        "committed_regressions",
        "read_above_acknowledged",
    ] {
        assert!(j[key].is_u64(), "{key} missing from {j}");
    }
    assert_eq!(j["passed"], true);
    assert!(j["examples"].is_object());
}

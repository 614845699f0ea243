//! Seed 004 line 117 (客户满意度 20 分) through `hotline report` on a scripted day: −1 per 不满意,
//! at most 3 for one matter (同一事项连续不满意最多扣3分), none for a matter the platform
//! exempted after review (客观因素或依法不能办理者不扣分); and every target says who set it.
mod common;
use common::*;
use hotline::metrics::Record;
use std::process::Command;

#[test]
fn the_report_s_satisfaction_score_equals_the_hand_computation() {
    let dir = temp_dir("satisfaction-cap");
    let store_path = dir.join("hotline.sqlite");
    // The scripted day: ratings of seat 1003 (省司法厅) and 1001 (12345热线中心).
    // (seat, call id, case rated by a revisit, rating)
    let day = [
        ("1003", "call-a", None, 3),         // 不满意 once: −1
        ("1003", "rv-1", Some("case-k"), 3), // case K 不满意 four times: −3, not −4
        ("1003", "rv-2", Some("case-k"), 3),
        ("1003", "rv-3", Some("case-k"), 3),
        ("1003", "rv-4", Some("case-k"), 3),
        ("1003", "call-b", None, 3), // exempted after review: 0
        ("1003", "call-c", None, 1), // 满意: 0
        ("1001", "call-d", None, 3), // 12345热线中心: −1
        ("1001", "call-e", None, 2), // 基本满意: 0
    ];
    {
        let (store, _) =
            hotline::metrics::store::Store::open(&store_path, std::path::Path::new(""), "node-a")
                .expect("store");
        for (seat, call, case, rating) in day {
            let mut detail = serde_json::json!({ "rating": rating });
            if let Some(case) = case {
                detail["matter"] = serde_json::json!(case);
            }
            store.record(
                Record::from_parts(
                    "2026-12-15T10:00:00.000+08:00".into(),
                    "survey",
                    Some(call.into()),
                    Some(seat.into()),
                    Some("general".into()),
                    detail,
                )
                .expect("a survey record"),
            );
        }
    } // dropped: written and closed
    std::fs::write(
        dir.join("exemptions.toml"),
        "[[exempt]]\nmatter = \"call-b\"\nreason = \"依法不能办理\"\nreviewed_by = \"平台审核员\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["report", "--day", "2026-12-15", "--config"])
        .arg(repo().join("config/hotline.toml"))
        .env("HOTLINE__STORE__PATH", &store_path)
        .env("HOTLINE__REPORTS__EXEMPTIONS", dir.join("exemptions.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // By hand: 省司法厅 20 − (1 + min(4, 3) + 0) = 16; 12345热线中心 20 − 1 = 19.
    let unit = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no unit {name}: {text}"))
            .to_string()
    };
    let sft = unit("省司法厅");
    assert!(
        sft.contains("不满意 6 (deducted 4, exempted matters 1)"),
        "{sft}"
    );
    assert!(sft.contains("客户满意度 16"), "{sft}");
    assert!(unit("12345热线中心").contains("客户满意度 19"), "{text}");
    // Where each rule and target comes from.
    assert!(text.contains("客户满意度: seed 004 line 117"), "{text}");
    assert!(text.contains("(operator)"), "{text}");
}

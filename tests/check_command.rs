//! `hotline check`: the shipped configuration passes; a broken dialplan is reported with file,
//! line and reason, and a non-zero exit.
mod common;
use common::*;
use std::process::Command;

#[test]
fn shipped_config_passes_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["check", "--config"])
        .arg(repo().join("config/hotline.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("43 retired whole-merge"), "{text}");
}

#[test]
fn broken_dialplans_are_reported_with_file_line_and_reason() {
    let dir = temp_dir("broken");
    copy_dir(&repo().join("dialplans"), &dir);
    std::fs::write(
        dir.join("zz-bad.toml"),
        "[[numbers]]\nnumber = \"12345\"\nflow = \"main\"\n\n[[numbers]]\nnumber = \"96000\"\nflow = \"nowhere\"\n\n[flows.x]\nsteps = [{ action = \"play\", prompts = [\"no-such-prompt\"] }]\n",
    )
    .unwrap();
    std::fs::write(dir.join("zz-syntax.toml"), "[[numbers]\nnumber = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["check", "--config"])
        .arg(repo().join("config/hotline.toml"))
        .env("HOTLINE__PATHS__DIALPLANS", &dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("zz-bad.toml:2: number 12345 is routed twice"),
        "{text}"
    );
    assert!(
        text.contains("zz-bad.toml:7: number 96000: no flow named \"nowhere\""),
        "{text}"
    );
    assert!(
        text.contains("zz-bad.toml:10: flow \"x\": prompt \"no-such-prompt\" has no file"),
        "{text}"
    );
    assert!(text.contains("zz-syntax.toml:1:"), "{text}");
}

#[test]
fn a_broken_scoring_rules_file_is_reported() {
    let dir = temp_dir("bad-rules");
    let rules = std::fs::read_to_string(repo().join("config/scoring.toml"))
        .unwrap()
        .replace("\"abandon_rate\"", "\"abandonment\"");
    std::fs::write(dir.join("scoring.toml"), rules).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["check", "--config"])
        .arg(repo().join("config/hotline.toml"))
        .env("HOTLINE__REPORTS__RULES", dir.join("scoring.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("indicator \"呼损率\": unknown measure \"abandonment\""),
        "{text}"
    );
}

#[test]
fn an_expert_target_whose_queue_no_seat_serves_is_reported() {
    // The shipped configuration beside links to the shipped prompts and dialplans, with the
    // expert target 12348 pointed at line-12369, which no seat serves.
    let dir = temp_dir("expert-queue");
    for d in ["prompts", "dialplans"] {
        std::os::unix::fs::symlink(repo().join(d), dir.join(d)).unwrap();
    }
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::copy(
        repo().join("config/scoring.toml"),
        dir.join("config/scoring.toml"),
    )
    .unwrap();
    let shipped = std::fs::read_to_string(repo().join("config/hotline.toml")).unwrap();
    assert!(shipped.contains("queue = \"line-12348\""));
    std::fs::write(
        dir.join("config/hotline.toml"),
        shipped.replace("queue = \"line-12348\"", "queue = \"line-12369\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hotline"))
        .args(["check", "--config"])
        .arg(dir.join("config/hotline.toml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("target 12348 (法律援助专家): no seat serves its queue \"line-12369\""),
        "{text}"
    );
}

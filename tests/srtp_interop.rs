//! Our SRTP speaks libsrtp's, the implementation most phones and PBXs use: for each suite both
//! have, libsrtp (through PyPI's `pylibsrtp`) protects RTP and RTCP packets that our
//! `SrtpSession` unprotects, and unprotects the ones ours protects, across a sequence number
//! wrap (65530 → 5), with the keys written and read as `a=crypto` lines. A tampered packet is
//! refused by both. One python3 process does libsrtp's half of every suite at once.

use hotline::media::sdes::{CryptoAttr, Suite};
use hotline::media::srtp::{SrtpError, SrtpSession};
use rand::SeedableRng as _;
use serde_json::{Value, json};
use std::io::Write as _;
use std::process::{Command, Stdio};

/// libsrtp's half: reads the cases as JSON, unprotects our packets with our key, protects its
/// own with its key, and writes what it protected as JSON.
const LIBSRTP: &str = r#"
import json, sys
import pylibsrtp
from pylibsrtp import Policy, Session

job = json.load(sys.stdin)
out = {"cases": []}
for case in job["cases"]:
    profile = getattr(Policy, case["profile"], None)
    if profile is None:
        out["cases"].append({"suite": case["suite"], "skipped": True})
        continue
    def session(key, direction):
        return Session(policy=Policy(key=bytes.fromhex(key), ssrc_type=direction, srtp_profile=profile))
    rx = session(case["rust_key"], Policy.SSRC_ANY_INBOUND)
    for plain, wire in zip(case["rtp_plain"], case["rtp_from_rust"]):
        got = rx.unprotect(bytes.fromhex(wire))
        assert got == bytes.fromhex(plain), (case["suite"], "rtp differs")
    for plain, wire in zip(case["rtcp_plain"], case["rtcp_from_rust"]):
        got = rx.unprotect_rtcp(bytes.fromhex(wire))
        assert got == bytes.fromhex(plain), (case["suite"], "rtcp differs")
    try:
        rx.unprotect(bytes.fromhex(case["tampered_from_rust"]))
        raise AssertionError((case["suite"], "libsrtp accepted a tampered packet"))
    except pylibsrtp.Error:
        pass
    tx = session(case["py_key"], Policy.SSRC_ANY_OUTBOUND)
    out["cases"].append({
        "suite": case["suite"],
        "skipped": False,
        "rtp_from_py": [tx.protect(bytes.fromhex(p)).hex() for p in case["rtp_plain"]],
        "rtcp_from_py": [tx.protect_rtcp(bytes.fromhex(p)).hex() for p in case["rtcp_plain"]],
    })
json.dump(out, sys.stdout)
"#;

/// libsrtp's name for each suite's profile.
fn profile(suite: Suite) -> &'static str {
    match suite {
        Suite::AesCm128HmacSha1_80 => "SRTP_PROFILE_AES128_CM_SHA1_80",
        Suite::AesCm128HmacSha1_32 => "SRTP_PROFILE_AES128_CM_SHA1_32",
        Suite::AeadAes128Gcm => "SRTP_PROFILE_AEAD_AES_128_GCM",
    }
}

/// A 172-byte PCMU packet.
fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, if seq == 65_530 { 0x80 } else { 0x00 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8).wrapping_mul(31) ^ seq as u8));
    p
}

/// A receiver report with one report block.
fn rtcp_rr(ssrc: u32, n: u8) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[n; 24]);
    p
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from python"))
        .collect()
}

#[test]
fn libsrtp_and_we_read_each_others_srtp_and_srtcp_in_every_common_suite() {
    let import = Command::new("python3")
        .args(["-c", "import pylibsrtp"])
        .output()
        .expect("python3 runs");
    assert!(
        import.status.success(),
        "pylibsrtp is not installed: pip install pylibsrtp (./scripts/test installs it when missing)"
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(4568);
    let seqs: Vec<u16> = (0..12u16).map(|i| 65_530u16.wrapping_add(i)).collect();
    let mut cases = Vec::new();
    let mut sessions = Vec::new();
    for suite in Suite::ALL {
        // Keys travel as a=crypto lines, as they would in SDP.
        let ours = CryptoAttr::generate(1, suite, &mut rng).unwrap();
        let theirs = CryptoAttr::generate(1, suite, &mut rng).unwrap();
        let ours: CryptoAttr = ours.to_string().parse().unwrap();
        let theirs: CryptoAttr = theirs.to_string().parse().unwrap();
        let mut session = SrtpSession::new(&ours, &theirs).unwrap();
        let mut wire = Vec::new();
        let (mut plain, mut from_rust) = (Vec::new(), Vec::new());
        for (i, &seq) in seqs.iter().enumerate() {
            let p = rtp(seq, i as u32 * 160, 0xCAFE_0001);
            session.protect_rtp(&p, &mut wire).unwrap();
            plain.push(hex(&p));
            from_rust.push(hex(&wire));
        }
        let (mut rtcp_plain, mut rtcp_from_rust) = (Vec::new(), Vec::new());
        for n in 0..3u8 {
            let p = rtcp_rr(0xCAFE_0001, n);
            session.protect_rtcp(&p, &mut wire).unwrap();
            rtcp_plain.push(hex(&p));
            rtcp_from_rust.push(hex(&wire));
        }
        session
            .protect_rtp(&rtp(20, 0, 0xCAFE_0001), &mut wire)
            .unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        cases.push(json!({
            "suite": suite.name(),
            "profile": profile(suite),
            "rust_key": hex(&ours.key_salt()),
            "py_key": hex(&theirs.key_salt()),
            "rtp_plain": plain,
            "rtp_from_rust": from_rust,
            "rtcp_plain": rtcp_plain,
            "rtcp_from_rust": rtcp_from_rust,
            "tampered_from_rust": hex(&wire),
        }));
        sessions.push((suite, session));
    }

    let mut child = Command::new("python3")
        .args(["-c", LIBSRTP])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!({ "cases": cases }).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "libsrtp could not read our packets:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON from python");

    let mut checked = Vec::new();
    for (case, (suite, session)) in answer["cases"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&mut sessions)
    {
        assert_eq!(case["suite"], suite.name());
        if case["skipped"].as_bool() == Some(true) {
            continue;
        }
        let mut plain = Vec::new();
        let from_py = case["rtp_from_py"].as_array().unwrap();
        for (i, (wire, &seq)) in from_py.iter().zip(&seqs).enumerate() {
            let wire = unhex(wire.as_str().unwrap());
            assert_eq!(wire.len(), 172 + suite.rtp_overhead(), "{suite}");
            if i == 5 {
                // Tampered with on the way: refused; the genuine packet is still taken.
                let mut bad = wire.clone();
                bad[30] ^= 4;
                assert_eq!(
                    session.unprotect_rtp(&bad, &mut plain),
                    Err(SrtpError::AuthFailed)
                );
            }
            session
                .unprotect_rtp(&wire, &mut plain)
                .unwrap_or_else(|e| panic!("{suite}: libsrtp's packet seq {seq}: {e}"));
            assert_eq!(plain, rtp(seq, i as u32 * 160, 0xCAFE_0001), "{suite}");
        }
        for (n, wire) in case["rtcp_from_py"].as_array().unwrap().iter().enumerate() {
            let wire = unhex(wire.as_str().unwrap());
            session
                .unprotect_rtcp(&wire, &mut plain)
                .unwrap_or_else(|e| panic!("{suite}: libsrtp's SRTCP {n}: {e}"));
            assert_eq!(plain, rtcp_rr(0xCAFE_0001, n as u8), "{suite}");
        }
        // libsrtp's packet replayed.
        let again = unhex(from_py[3].as_str().unwrap());
        assert_eq!(
            session.unprotect_rtp(&again, &mut plain),
            Err(SrtpError::Replayed)
        );
        let counters = session.counters();
        assert_eq!(
            (counters.auth_failures, counters.replays),
            (1, 1),
            "{suite}"
        );
        checked.push(*suite);
    }
    // The AES-CM suites are in every libsrtp; GCM in those built with it (pylibsrtp ≥ 0.10).
    assert!(checked.contains(&Suite::AesCm128HmacSha1_80), "{checked:?}");
    assert!(checked.contains(&Suite::AesCm128HmacSha1_32), "{checked:?}");
    eprintln!("interoperates with libsrtp in {checked:?}");
}

//! SDES keys for SRTP: the SDP `a=crypto` attribute of RFC 4568 (and RFC 7714 §12 for
//! AES-GCM), parsed into a typed [`CryptoAttr`] at the edge, generated for our offers and
//! answers, and the choice of an answer from an offer.
//!
//! We honour only what a plain SRTP session with one master key can do: the suites of
//! [`Suite`], one `inline:` key without MKI, a lifetime (if any) of at least 2^31 packets
//! (we never rekey within a call, and a call never sends that many), and no session
//! parameter that weakens or changes the transform (`UNENCRYPTED_SRTP`, `KDR` other than 0,
//! FEC). Everything else is refused with a [`SdesError`] that says what, so an offer whose
//! every line is refused can be answered 488 with a reason.
//!
//! Keys are secret: [`CryptoAttr`]'s `Debug` does not print them, and they come from the
//! caller's cryptographic generator ([`CryptoAttr::generate`]), in the daemon the operating
//! system's ([`crate::entropy::key_rng`]); a test passes a seeded one.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use std::fmt;

/// Base64 as RFC 4568 writes inline keys: the standard alphabet, padded when we write, and
/// accepted with or without padding when we read (phones differ).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The smallest lifetime we accept: 2^31 packets. A shorter one would ask us to rekey within
/// a long call, which SDES can only do with a re-INVITE we do not make.
pub const MIN_LIFETIME: u64 = 1 << 31;

/// Master key length of every suite we speak (AES-128).
pub const KEY_LEN: usize = 16;

/// The SRTP crypto suites we speak, in our order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// RFC 4568: AES-128 counter mode, HMAC-SHA1 tag of 80 bits. Every SDES phone has it.
    AesCm128HmacSha1_80,
    /// RFC 4568: as above with a 32-bit tag on RTP (SRTCP keeps 80 bits).
    AesCm128HmacSha1_32,
    /// RFC 7714: AES-128 in Galois/Counter Mode, 16-byte tag, 12-byte salt.
    AeadAes128Gcm,
}

impl Suite {
    /// Every suite we speak, most preferred first: what we offer, in that order.
    pub const ALL: [Suite; 3] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AeadAes128Gcm,
        Suite::AesCm128HmacSha1_32,
    ];

    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite of an `a=crypto` name (case-sensitive, as RFC 4568 registers them).
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Master salt length: 112 bits for AES-CM (RFC 3711), 96 bits for GCM (RFC 7714 §12).
    pub fn salt_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 14,
            Suite::AeadAes128Gcm => 12,
        }
    }

    /// Bytes SRTP adds to an RTP packet: the authentication tag.
    pub fn rtp_overhead(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
            Suite::AeadAes128Gcm => 16,
        }
    }

    /// Bytes SRTCP adds to an RTCP packet: the SRTCP index and the tag.
    pub fn rtcp_overhead(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 4 + 10,
            Suite::AeadAes128Gcm => 4 + 16,
        }
    }
}

impl Suite {
    /// Where the SRTCP word holding the E flag and the index starts, counted from the end of
    /// the packet: before the tag for AES-CM (RFC 3711 §3.4), last for AEAD (RFC 7714 §9.1,
    /// whose tag is inside the ciphertext).
    pub fn srtcp_e_flag_from_end(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 4 + 10,
            Suite::AeadAes128Gcm => 4,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an `a=crypto` line cannot be used. Each says what the peer sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdesError {
    #[error("a=crypto does not parse: {0}")]
    Syntax(&'static str),
    #[error("a=crypto tag {0:?} is not 1 to 9 digits")]
    BadTag(String),
    #[error("crypto suite {0} is not one we speak")]
    UnknownSuite(String),
    #[error("key method {0:?} is not inline")]
    KeyMethod(String),
    #[error("inline key is not base64")]
    BadBase64,
    #[error("inline key||salt is {got} bytes; {suite} needs {want}")]
    KeyLength {
        suite: Suite,
        want: usize,
        got: usize,
    },
    #[error("key lifetime {0:?} is not a number or 2^n")]
    BadLifetime(String),
    #[error("key lifetime of {0} packets is shorter than 2^31: we do not rekey")]
    ShortLifetime(u64),
    #[error("MKI is not supported (one master key per direction)")]
    Mki,
    #[error("several keys in one a=crypto are not supported")]
    SeveralKeys,
    #[error("session parameter {0} is not supported")]
    SessionParam(String),
    #[error("no a=crypto line offers a suite we speak with keys we accept")]
    NoAcceptableCrypto,
    #[error("the random generator failed: {0}")]
    Rng(String),
}

/// One `a=crypto` attribute: a tag, a suite, and the master key and salt the sender of that
/// SDP will encrypt with.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoAttr {
    /// Identifies the line in an offer; the answer repeats it.
    pub tag: u32,
    pub suite: Suite,
    /// The AES-128 master key.
    pub key: [u8; KEY_LEN],
    /// The master salt: [`Suite::salt_len`] bytes.
    pub salt: Vec<u8>,
    /// The lifetime in packets when the line gave one (we accept only ≥ 2^31).
    pub lifetime: Option<u64>,
    /// `WSH` (window size hint, RFC 4568 §6.3.7) when given: a hint we may ignore.
    pub window_size_hint: Option<u32>,
}

/// Keys stay out of logs.
impl fmt::Debug for CryptoAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoAttr")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("key", &"<secret>")
            .field("lifetime", &self.lifetime)
            .field("window_size_hint", &self.window_size_hint)
            .finish()
    }
}

impl CryptoAttr {
    /// Parses the value of an `a=crypto:` line (what follows the colon), e.g.
    /// `1 AES_CM_128_HMAC_SHA1_80 inline:<base64 key||salt>[|lifetime][|MKI:len] [params]`.
    pub fn parse(value: &str) -> Result<CryptoAttr, SdesError> {
        let mut fields = value.split_ascii_whitespace();
        let tag_s = fields.next().ok_or(SdesError::Syntax("empty"))?;
        let suite_s = fields.next().ok_or(SdesError::Syntax("no crypto suite"))?;
        let key_params = fields
            .next()
            .ok_or(SdesError::Syntax("no key parameters"))?;

        if tag_s.is_empty() || tag_s.len() > 9 || !tag_s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SdesError::BadTag(tag_s.to_string()));
        }
        let tag: u32 = tag_s
            .parse()
            .map_err(|_| SdesError::BadTag(tag_s.to_string()))?;
        let suite = Suite::from_name(suite_s)
            .ok_or_else(|| SdesError::UnknownSuite(suite_s.to_string()))?;

        if key_params.contains(';') {
            return Err(SdesError::SeveralKeys);
        }
        let (method, info) = key_params
            .split_once(':')
            .ok_or(SdesError::Syntax("key parameter has no method"))?;
        if method != "inline" {
            return Err(SdesError::KeyMethod(method.to_string()));
        }
        let mut parts = info.split('|');
        let b64 = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        // RFC 4568 §9.2: `|lifetime` then `|MKI:length`; the lifetime may be left out, so a
        // part with a colon is the MKI wherever it stands.
        if rest.iter().any(|p| p.contains(':')) {
            return Err(SdesError::Mki);
        }
        let lifetime = match rest.as_slice() {
            [] => None,
            [l] => {
                let n = parse_lifetime(l)?;
                if n < MIN_LIFETIME {
                    return Err(SdesError::ShortLifetime(n));
                }
                Some(n)
            }
            _ => return Err(SdesError::Syntax("too many | parts in the key")),
        };
        let raw = B64.decode(b64).map_err(|_| SdesError::BadBase64)?;
        let want = KEY_LEN + suite.salt_len();
        if raw.len() != want {
            return Err(SdesError::KeyLength {
                suite,
                want,
                got: raw.len(),
            });
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&raw[..KEY_LEN]);
        let salt = raw[KEY_LEN..].to_vec();

        let mut window_size_hint = None;
        for param in fields {
            match param.split_once('=') {
                Some(("WSH", n)) => {
                    window_size_hint = Some(
                        n.parse()
                            .map_err(|_| SdesError::SessionParam(param.to_string()))?,
                    )
                }
                // A key derivation rate of 0 is the default: derive once.
                Some(("KDR", "0")) => {}
                _ => return Err(SdesError::SessionParam(param.to_string())),
            }
        }
        Ok(CryptoAttr {
            tag,
            suite,
            key,
            salt,
            lifetime,
            window_size_hint,
        })
    }

    /// A fresh master key and salt for `suite`, drawn from `rng`: in the daemon the
    /// operating system's generator ([`crate::entropy::key_rng`]).
    pub fn generate<R: rand::TryCryptoRng + ?Sized>(
        tag: u32,
        suite: Suite,
        rng: &mut R,
    ) -> Result<CryptoAttr, SdesError> {
        let mut raw = [0u8; KEY_LEN + 14];
        let raw = &mut raw[..KEY_LEN + suite.salt_len()];
        rng.try_fill_bytes(raw)
            .map_err(|e| SdesError::Rng(e.to_string()))?;
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&raw[..KEY_LEN]);
        let salt = raw[KEY_LEN..].to_vec();
        raw.fill(0);
        Ok(CryptoAttr {
            tag,
            suite,
            key,
            salt,
            lifetime: None,
            window_size_hint: None,
        })
    }

    /// The key and salt as one `key||salt` string of bytes, as `inline:` carries them (and as
    /// libsrtp takes them).
    pub fn key_salt(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(KEY_LEN + self.salt.len());
        v.extend_from_slice(&self.key);
        v.extend_from_slice(&self.salt);
        v
    }

    /// The `inline:` value alone (base64 of key||salt), e.g. for a command line.
    pub fn inline_key(&self) -> String {
        B64.encode(self.key_salt())
    }

    /// The attribute from a suite and a base64 `key||salt`, as a tool takes it on its
    /// command line (`AES_CM_128_HMAC_SHA1_80:<base64>`); the tag is 1.
    pub fn from_suite_and_inline(suite_and_key: &str) -> Result<CryptoAttr, SdesError> {
        let (suite, key) = suite_and_key
            .split_once(':')
            .ok_or(SdesError::Syntax("expected SUITE:BASE64KEY"))?;
        CryptoAttr::parse(&format!("1 {suite} inline:{key}"))
    }
}

/// The value of an `a=crypto:` line: tag, suite and inline key (we never write a lifetime,
/// MKI or session parameter).
impl fmt::Display for CryptoAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            self.inline_key()
        )
    }
}

impl std::str::FromStr for CryptoAttr {
    type Err = SdesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CryptoAttr::parse(s)
    }
}

/// A lifetime is a decimal count or `2^n`.
fn parse_lifetime(s: &str) -> Result<u64, SdesError> {
    let bad = || SdesError::BadLifetime(s.to_string());
    if let Some(exp) = s.strip_prefix("2^") {
        let n: u32 = exp.parse().map_err(|_| bad())?;
        // RFC 3711 caps SRTP at 2^48 packets; anything above means "as long as allowed".
        Ok(1u64 << n.min(63))
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// Our offer: one line per suite we speak, tags 1, 2, 3 in our order of preference, each with
/// its own fresh key (RFC 4568 §6.1: a key is never reused across lines).
pub fn offer<R: rand::TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Vec<CryptoAttr>, SdesError> {
    Suite::ALL
        .into_iter()
        .zip(1u32..)
        .map(|(suite, tag)| CryptoAttr::generate(tag, suite, rng))
        .collect()
}

/// The line of an offer we take: the first one (the offerer's preference, RFC 4568 §7.1.1)
/// that parses into something we honour. `Err` carries why the first line was refused when
/// none is acceptable ([`SdesError::NoAcceptableCrypto`] when there was no line at all).
pub fn choose<'a, I>(offered: I) -> Result<CryptoAttr, SdesError>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut first_err = None;
    for value in offered {
        match CryptoAttr::parse(value) {
            Ok(attr) => return Ok(attr),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(SdesError::NoAcceptableCrypto))
}

/// Our answer to an offer: the line we chose (their key: what we decrypt with) and ours, with
/// the offer's tag and suite and a fresh key (what we encrypt with).
pub fn answer<'a, I, R>(offered: I, rng: &mut R) -> Result<(CryptoAttr, CryptoAttr), SdesError>
where
    I: IntoIterator<Item = &'a str>,
    R: rand::TryCryptoRng + ?Sized,
{
    let theirs = choose(offered)?;
    let ours = CryptoAttr::generate(theirs.tag, theirs.suite, rng)?;
    Ok((theirs, ours))
}

/// The line of our offer that an answer accepted: the answer's tag must name one of our lines
/// and keep its suite (RFC 4568 §7.1.2). Returns (ours, theirs).
pub fn accept_answer(
    offered: &[CryptoAttr],
    answer_value: &str,
) -> Result<(CryptoAttr, CryptoAttr), SdesError> {
    let theirs = CryptoAttr::parse(answer_value)?;
    let ours = offered
        .iter()
        .find(|o| o.tag == theirs.tag && o.suite == theirs.suite)
        .ok_or(SdesError::NoAcceptableCrypto)?;
    Ok((ours.clone(), theirs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    /// RFC 4568 §4's example key||salt (30 bytes).
    const KEY80: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    fn rng() -> StdRng {
        StdRng::seed_from_u64(14)
    }

    #[test]
    fn the_rfc_4568_example_parses_into_key_salt_and_lifetime() {
        // RFC 4568 §4's example key with a 2^20 lifetime is refused; with 2^31 it is taken.
        let key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        let a = CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^31")).unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(a.suite, Suite::AesCm128HmacSha1_80);
        assert_eq!(a.lifetime, Some(1 << 31));
        assert_eq!(a.salt.len(), 14);
        assert_eq!(&a.key[..4], b"=-n@");
        assert_eq!(a.inline_key(), key);
        assert_eq!(
            CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20")),
            Err(SdesError::ShortLifetime(1 << 20))
        );
    }

    #[test]
    fn generated_lines_format_and_parse_back_for_every_suite() {
        let mut r = rng();
        for (i, suite) in Suite::ALL.into_iter().enumerate() {
            let a = CryptoAttr::generate(i as u32 + 7, suite, &mut r).unwrap();
            let line = a.to_string();
            assert!(
                line.starts_with(&format!("{} {} inline:", i + 7, suite.name())),
                "{line}"
            );
            assert_eq!(CryptoAttr::parse(&line).unwrap(), a);
            assert_eq!(line.parse::<CryptoAttr>().unwrap(), a);
            assert_eq!(a.salt.len(), suite.salt_len());
            assert_eq!(a.key_salt().len(), 16 + suite.salt_len());
        }
        // Two keys from one generator differ; the key is not in Debug.
        let (a, b) = (
            CryptoAttr::generate(1, Suite::AesCm128HmacSha1_80, &mut r).unwrap(),
            CryptoAttr::generate(1, Suite::AesCm128HmacSha1_80, &mut r).unwrap(),
        );
        assert_ne!(a.key, b.key);
        assert!(!format!("{a:?}").contains(&a.inline_key()));
        // The daemon's generator: the operating system's.
        let os = CryptoAttr::generate(1, Suite::AeadAes128Gcm, &mut crate::entropy::key_rng());
        assert_eq!(os.unwrap().salt.len(), 12);
    }

    #[test]
    fn lifetime_window_hint_and_kdr_zero_are_accepted() {
        let a = CryptoAttr::parse(&format!(
            "2 AES_CM_128_HMAC_SHA1_32 inline:{KEY80}|2147483648 WSH=128 KDR=0"
        ))
        .unwrap();
        assert_eq!(a.tag, 2);
        assert_eq!(a.lifetime, Some(1 << 31));
        assert_eq!(a.window_size_hint, Some(128));
        // Unpadded base64 is taken too (a GCM key||salt is 28 bytes, padded with "=").
        let g = CryptoAttr::generate(3, Suite::AeadAes128Gcm, &mut rng()).unwrap();
        let unpadded = g.to_string().trim_end_matches('=').to_string();
        assert_ne!(unpadded, g.to_string());
        assert_eq!(CryptoAttr::parse(&unpadded).unwrap(), g);
    }

    #[test]
    fn each_thing_we_cannot_honour_is_refused_with_its_reason() {
        let cases: &[(&str, SdesError)] = &[
            ("", SdesError::Syntax("empty")),
            ("1", SdesError::Syntax("no crypto suite")),
            (
                "1 AES_CM_128_HMAC_SHA1_80",
                SdesError::Syntax("no key parameters"),
            ),
            (
                &format!("x1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}"),
                SdesError::BadTag("x1".into()),
            ),
            (
                &format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}"),
                SdesError::BadTag("1234567890".into()),
            ),
            (
                &format!("1 F8_128_HMAC_SHA1_80 inline:{KEY80}"),
                SdesError::UnknownSuite("F8_128_HMAC_SHA1_80".into()),
            ),
            (
                &format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY80}"),
                SdesError::UnknownSuite("AES_256_CM_HMAC_SHA1_80".into()),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 uri:https://example.org/k",
                SdesError::KeyMethod("uri".into()),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline",
                SdesError::Syntax("key parameter has no method"),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64!",
                SdesError::BadBase64,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                SdesError::KeyLength {
                    suite: Suite::AesCm128HmacSha1_80,
                    want: 30,
                    got: 33,
                },
            ),
            (
                &format!("1 AEAD_AES_128_GCM inline:{KEY80}"),
                SdesError::KeyLength {
                    suite: Suite::AeadAes128Gcm,
                    want: 28,
                    got: 30,
                },
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}|2^20|1:4"),
                SdesError::Mki,
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}|1:4"),
                SdesError::Mki,
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}|1048576"),
                SdesError::ShortLifetime(1 << 20),
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}|forever"),
                SdesError::BadLifetime("forever".into()),
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80};inline:{KEY80}"),
                SdesError::SeveralKeys,
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80} UNENCRYPTED_SRTP"),
                SdesError::SessionParam("UNENCRYPTED_SRTP".into()),
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80} UNAUTHENTICATED_SRTP"),
                SdesError::SessionParam("UNAUTHENTICATED_SRTP".into()),
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80} KDR=24"),
                SdesError::SessionParam("KDR=24".into()),
            ),
            (
                &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80} FEC_ORDER=FEC_SRTP"),
                SdesError::SessionParam("FEC_ORDER=FEC_SRTP".into()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(CryptoAttr::parse(line).as_ref(), Err(want), "{line}");
        }
    }

    #[test]
    fn the_answer_takes_the_first_line_we_speak_and_keeps_its_tag() {
        let offered = [
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY80}"),
            format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY80}"),
            format!("3 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}"),
        ];
        let (theirs, ours) = answer(offered.iter().map(String::as_str), &mut rng()).unwrap();
        assert_eq!((theirs.tag, theirs.suite), (2, Suite::AesCm128HmacSha1_32));
        assert_eq!((ours.tag, ours.suite), (2, Suite::AesCm128HmacSha1_32));
        assert_ne!(ours.key, theirs.key);
        // Nothing acceptable: the first line's reason, or NoAcceptableCrypto when empty.
        assert_eq!(
            choose(offered[..1].iter().map(String::as_str)),
            Err(SdesError::UnknownSuite("AES_256_CM_HMAC_SHA1_80".into()))
        );
        assert_eq!(choose([]), Err(SdesError::NoAcceptableCrypto));
    }

    #[test]
    fn our_offer_has_every_suite_with_its_own_key_and_an_answer_picks_one() {
        let mut r = rng();
        let ours = offer(&mut r).unwrap();
        assert_eq!(
            ours.iter().map(|a| (a.tag, a.suite)).collect::<Vec<_>>(),
            vec![
                (1, Suite::AesCm128HmacSha1_80),
                (2, Suite::AeadAes128Gcm),
                (3, Suite::AesCm128HmacSha1_32)
            ]
        );
        assert_ne!(ours[0].key, ours[2].key);
        let their_line = CryptoAttr::generate(2, Suite::AeadAes128Gcm, &mut r).unwrap();
        let (mine, theirs) = accept_answer(&ours, &their_line.to_string()).unwrap();
        assert_eq!(mine, ours[1]);
        assert_eq!(theirs, their_line);
        // An answer with a tag we did not offer, or another suite under our tag, is refused.
        let wrong = CryptoAttr::generate(2, Suite::AesCm128HmacSha1_80, &mut r).unwrap();
        assert_eq!(
            accept_answer(&ours, &wrong.to_string()),
            Err(SdesError::NoAcceptableCrypto)
        );
    }

    #[test]
    fn mangled_lines_are_refused_and_never_panic() {
        use rand::RngExt as _;
        let good = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY80}|2^31 WSH=64");
        let alphabet = b" :|^;=0129AZaz+/_\t\xff";
        let mut r = rng();
        for _ in 0..5000 {
            let mut b = good.clone().into_bytes();
            for _ in 0..r.random_range(1..4) {
                let at = r.random_range(0..b.len());
                match r.random_range(0..3) {
                    0 => b[at] = alphabet[r.random_range(0..alphabet.len())],
                    1 => b.truncate(at),
                    _ => b.insert(at, alphabet[r.random_range(0..alphabet.len())]),
                }
                if b.is_empty() {
                    break;
                }
            }
            let _ = CryptoAttr::parse(&String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn a_suite_and_inline_key_from_a_command_line_parse() {
        let a =
            CryptoAttr::from_suite_and_inline(&format!("AES_CM_128_HMAC_SHA1_80:{KEY80}")).unwrap();
        assert_eq!((a.tag, a.suite), (1, Suite::AesCm128HmacSha1_80));
        assert!(CryptoAttr::from_suite_and_inline("nonsense").is_err());
    }
}

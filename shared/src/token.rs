//! Member tokens, format v1: `v1.<member_id>.<expires_unix_s>.<sig>`.
//!
//! `sig` is base64url (no padding) of HMAC-SHA256(secret, `v1.<member_id>.<expires_unix_s>`).
//! Edge and origin both verify with this code and no database lookup, so a
//! token the edge accepts is exactly a token the origin accepts. The member id
//! a request acts for always comes from a verified token, never from a header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::MemberId;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";
/// Longest token we bother to look at; real ones are under 80 bytes.
const MAX_TOKEN_LEN: usize = 256;

/// The HMAC key shared by everything that issues or checks tokens.
#[derive(Clone)]
pub struct TokenSecret(Vec<u8>);

impl TokenSecret {
    /// Refuses an empty secret: it would make every token forgeable.
    pub fn new(secret: impl Into<Vec<u8>>) -> Option<Self> {
        let bytes = secret.into();
        (!bytes.is_empty()).then_some(Self(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub member: MemberId,
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not of the form v1.<member_id>.<expires>.<sig>")]
    Malformed,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
}

/// Issues a token for `member` valid until `expires_at` (unix seconds).
pub fn sign(secret: &TokenSecret, member: MemberId, expires_at: u64) -> String {
    let payload = format!("{VERSION}.{member}.{expires_at}");
    let mut mac = secret.mac();
    mac.update(payload.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{payload}.{sig}")
}

/// Checks a token's form, signature (in constant time) and expiry.
pub fn verify(secret: &TokenSecret, token: &str, now_unix_s: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (payload, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mut parts = payload.split('.');
    let (Some(VERSION), Some(member), Some(expires), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let member: MemberId = member.parse().map_err(|_| TokenError::Malformed)?;
    if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expires_at: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;

    let mut mac = secret.mac();
    mac.update(payload.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    if expires_at <= now_unix_s {
        return Err(TokenError::Expired);
    }
    Ok(Claims { member, expires_at })
}

/// The token inside an `Authorization: Bearer <token>` header value.
pub fn bearer(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> TokenSecret {
        TokenSecret::new("test-secret").unwrap()
    }

    fn member(id: i64) -> MemberId {
        MemberId::new(id).unwrap()
    }

    #[test]
    fn round_trips() {
        let token = sign(&secret(), member(42), 2_000);
        assert!(token.starts_with("v1.42.2000."));
        let claims = verify(&secret(), &token, 1_999).unwrap();
        assert_eq!(claims.member, member(42));
        assert_eq!(claims.expires_at, 2_000);
    }

    #[test]
    fn signature_is_hmac_sha256_base64url_of_the_payload() {
        // Recomputed independently of `sign` so a change of encoding is caught.
        let mut mac = HmacSha256::new_from_slice(b"test-secret").unwrap();
        mac.update(b"v1.7.100");
        let expected = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(
            sign(&secret(), member(7), 100),
            format!("v1.7.100.{expected}")
        );
        assert!(!expected.contains('=') && !expected.contains('+') && !expected.contains('/'));
    }

    #[test]
    fn expired_at_the_second_it_names() {
        let token = sign(&secret(), member(1), 1_000);
        assert_eq!(verify(&secret(), &token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn forged_tokens_fail() {
        let token = sign(&secret(), member(1), 5_000);
        let other = TokenSecret::new("another").unwrap();
        assert_eq!(verify(&other, &token, 0), Err(TokenError::BadSignature));

        // Same signature, different member: the signature no longer matches.
        let sig = token.rsplit_once('.').unwrap().1;
        let swapped = format!("v1.2.5000.{sig}");
        assert_eq!(
            verify(&secret(), &swapped, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens_fail() {
        let good = sign(&secret(), member(1), 5_000);
        let sig = good.rsplit_once('.').unwrap().1.to_string();
        for bad in [
            String::new(),
            "v1".into(),
            "v1.1.5000".into(),
            format!("v2.1.5000.{sig}"),
            format!("v1.0.5000.{sig}"),
            format!("v1.-1.5000.{sig}"),
            format!("v1.1.-5.{sig}"),
            format!("v1.1.5000.{sig}.extra"),
            format!("v1.1.5000.{sig}=="),
            format!("v1.1..{sig}"),
            "v1.1.5000.!!!".into(),
            "x".repeat(300),
        ] {
            assert_eq!(
                verify(&secret(), &bad, 0),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn empty_secret_is_refused() {
        assert!(TokenSecret::new("").is_none());
    }
}

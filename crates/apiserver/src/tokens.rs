//! Service account tokens: the TokenRequest subresource issues ES256-signed JWTs with the claims
//! kube-apiserver uses, and the authenticator accepts them while the service account (and the
//! bound pod, if any) still exists with the same uid.

use base64::Engine;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, Cause};

/// The issuer and default audience of every token.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The longest lifetime a token gets (one year, what kube-apiserver's extended expiration allows;
/// the syncer mints the tokens of host pods once, for this long).
pub const MAX_EXPIRATION: i64 = 365 * 24 * 3600;

/// Signs and verifies service account tokens with one P-256 key.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    key_id: String,
    /// Tokens whose signature was checked, with whom they name and when they expire: a signature
    /// check costs far more than the rest of a request, and clients send the same token for
    /// hours. Bounded (emptied when full); expiry is still checked on every use.
    verified: std::sync::Mutex<std::collections::HashMap<String, (TokenSubject, i64, i64)>>,
}

/// How many verified tokens are remembered.
const VERIFIED_CACHE: usize = 4096;

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Who a valid token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    /// Namespace of the service account.
    pub namespace: String,
    /// Service account name.
    pub name: String,
    /// Service account uid at issue time.
    pub uid: String,
    /// The bound pod (name, uid), if any.
    pub pod: Option<(String, String)>,
    /// The token's id (`jti` claim), reported as its credential id.
    pub jti: Option<String>,
}

impl TokenSigner {
    /// A signer from a PKCS#8 (DER) P-256 key.
    pub fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &ring::rand::SystemRandom::new()).ok()?;
        let public = key.public_key().as_ref().to_vec();
        let key_id = b64(&ring::digest::digest(&ring::digest::SHA256, &public).as_ref()[..16]);
        Some(TokenSigner { key, public, key_id, verified: Default::default() })
    }

    /// Issues a token for service account `namespace/name` (uid `uid`) from a TokenRequest spec.
    /// Returns the token and its expiry (RFC 3339).
    pub fn issue(&self, namespace: &str, name: &str, uid: &str, spec: &Value) -> ApiResult<(String, String)> {
        let requested = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
        if requested < 600 {
            return Err(ApiError::Invalid {
                group: "authentication.k8s.io".into(),
                kind: "TokenRequest".into(),
                // Upstream validates the request object, which has no name.
                name: String::new(),
                causes: vec![Cause::invalid_number(
                    "spec.expirationSeconds",
                    requested,
                    "may not specify a duration less than 10 minutes",
                )],
            });
        }
        let expiration = requested.min(MAX_EXPIRATION);
        let now = jiff::Timestamp::now().as_second();
        let audiences = match spec.get("audiences").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => Value::Array(list.clone()),
            _ => json!([ISSUER]),
        };
        let mut kubernetes = json!({"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}});
        if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.get("kind").and_then(Value::as_str) == Some("Pod"))
        {
            kubernetes["pod"] = json!({"name": bound.get("name"), "uid": bound.get("uid")});
        }
        let claims = json!({
            "iss": ISSUER, "aud": audiences, "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "iat": now, "nbf": now, "exp": now + expiration, "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": kubernetes,
        });
        let header = json!({"alg": "ES256", "kid": self.key_id, "typ": "JWT"});
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| ApiError::Internal("token signing failed".into()))?;
        let expiry = jiff::Timestamp::from_second(now + expiration)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        Ok((format!("{signing_input}.{}", b64(signature.as_ref())), expiry))
    }

    /// Checks signature, issuer and time window; returns whom the token names.
    pub fn verify(&self, token: &str) -> Option<TokenSubject> {
        let now = jiff::Timestamp::now().as_second();
        let in_window = |nbf: i64, exp: i64| exp >= now && nbf <= now + 60;
        let lock = || self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((subject, nbf, exp)) = lock().get(token) {
            return in_window(*nbf, *exp).then(|| subject.clone());
        }
        let (subject, nbf, exp) = self.check(token)?;
        let mut cache = lock();
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(token.to_string(), (subject.clone(), nbf, exp));
        in_window(nbf, exp).then_some(subject)
    }

    /// The signature and issuer check; whom the token names and its `nbf` and `exp`.
    fn check(&self, token: &str) -> Option<(TokenSubject, i64, i64)> {
        let mut parts = token.split('.');
        let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let decode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok();
        let header: Value = serde_json::from_slice(&decode(header)?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return None;
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(
                format!("{}.{}", token.split('.').next()?, token.split('.').nth(1)?).as_bytes(),
                &decode(signature)?,
            )
            .ok()?;
        let claims: Value = serde_json::from_slice(&decode(claims)?).ok()?;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return None;
        }
        let exp = claims.get("exp").and_then(Value::as_i64)?;
        let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(i64::MIN);
        let k = claims.get("kubernetes.io")?;
        let text = |p: &str| k.pointer(p).and_then(Value::as_str).map(String::from);
        let subject = TokenSubject {
            namespace: text("/namespace")?,
            name: text("/serviceaccount/name")?,
            uid: text("/serviceaccount/uid")?,
            pod: text("/pod/name").zip(text("/pod/uid")),
            jti: claims.get("jti").and_then(Value::as_str).map(String::from),
        };
        Some((subject, nbf, exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer_for_test() -> TokenSigner {
        let key = rcgen::KeyPair::generate().unwrap();
        TokenSigner::from_pkcs8(&key.serialize_der()).unwrap()
    }

    #[test]
    fn issued_tokens_verify_and_name_the_account() {
        let signer = signer_for_test();
        let (token, expiry) = signer.issue("team", "robot", "uid-1", &json!({"audiences": ["api"]})).unwrap();
        assert!(!expiry.is_empty());
        let subject = signer.verify(&token).unwrap();
        assert_eq!(
            subject,
            TokenSubject {
                namespace: "team".into(),
                name: "robot".into(),
                uid: "uid-1".into(),
                pod: None,
                jti: subject.jti.clone()
            }
        );
        assert_eq!(subject.jti.as_ref().map(String::len), Some(36), "the token's id is a UUID");
        let mut tampered = token.clone();
        tampered.insert(token.len() / 2, 'x');
        assert!(signer.verify(&tampered).is_none());
        assert_eq!(signer.verify(&token), Some(subject.clone()), "a remembered token still verifies");
        assert!(signer_for_test().verify(&token).is_none(), "another key does not verify it");
        assert_eq!(signer.issue("a", "b", "c", &json!({"expirationSeconds": 60})).unwrap_err().code(), 422);
    }
}

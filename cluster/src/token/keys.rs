//! Ed25519 keys for join tokens. The API holds the private key and signs; shards hold only
//! the public key and verify, so a compromised shard cannot mint a token for any room.
//!
//! Keys travel as PEM: the private key as PKCS#8 (`openssl genpkey -algorithm ed25519`), the
//! public key as a SubjectPublicKeyInfo (`openssl pkey -pubout`) or inside an X.509
//! certificate (what the Helm chart can generate; only the key in it is used).

use aws_lc_rs::signature::{ED25519_PUBLIC_KEY_LEN, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use x509_cert::der::Decode;

/// The DER of the Ed25519 algorithm identifier (OID 1.3.101.112) inside a
/// SubjectPublicKeyInfo; an Ed25519 SPKI is this header and the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The Ed25519 OID, as the certificate parser hands it back.
const ED25519_OID: &str = "1.3.101.112";

/// Why a configured key cannot be used. Each message says what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not a PEM block (expected -----BEGIN {expected}-----)")]
    NotPem { expected: &'static str },
    #[error("a PEM {found} was given where a {expected} was expected")]
    WrongKind {
        found: String,
        expected: &'static str,
    },
    #[error(
        "this is a private key: a shard verifies join tokens with the public key only \
         (--join-token-public-key), so that a compromised shard cannot mint them"
    )]
    PrivateKeyForVerifier,
    #[error("not an Ed25519 key: {0}")]
    NotEd25519(String),
}

/// The API's half: signs join tokens (and knows the public key, for a single process
/// that verifies its own tokens).
#[derive(Clone)]
pub struct TokenSigner {
    pub(super) encoding: EncodingKey,
    /// PKCS#8 DER, for handing the key to another process (tests, `surge up`'s children).
    pkcs8: Vec<u8>,
    verifier: TokenVerifier,
}

/// A shard's half: verifies join tokens with the public key only.
#[derive(Clone)]
pub struct TokenVerifier {
    pub(super) decoding: DecodingKey,
    public: [u8; ED25519_PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenVerifier({})", STANDARD.encode(self.public))
    }
}

impl TokenSigner {
    /// A fresh keypair, for a single process that both issues and verifies (`surge up`
    /// without a configured key) and for tests.
    pub fn generate() -> Self {
        // Generation fails only when the system's random source does, which leaves the
        // process unable to do anything safely.
        #[allow(clippy::expect_used)]
        let pair = Ed25519KeyPair::generate().expect("the system random source works");
        #[allow(clippy::expect_used)]
        let pkcs8 = pair
            .to_pkcs8()
            .expect("a generated key encodes")
            .as_ref()
            .to_vec();
        Self::from_pair(&pair, pkcs8)
    }

    /// The private key from PEM (`-----BEGIN PRIVATE KEY-----`, PKCS#8 v1 or v2).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        const EXPECTED: &str = "PRIVATE KEY";
        let (label, der) = decode_pem(pem, EXPECTED)?;
        if label != EXPECTED {
            return Err(KeyError::WrongKind {
                found: label,
                expected: EXPECTED,
            });
        }
        let pair =
            Ed25519KeyPair::from_pkcs8(&der).map_err(|e| KeyError::NotEd25519(e.to_string()))?;
        Ok(Self::from_pair(&pair, der))
    }

    fn from_pair(pair: &Ed25519KeyPair, pkcs8: Vec<u8>) -> Self {
        let mut public = [0u8; ED25519_PUBLIC_KEY_LEN];
        public.copy_from_slice(pair.public_key().as_ref());
        Self {
            encoding: EncodingKey::from_ed_der(&pkcs8),
            pkcs8,
            verifier: TokenVerifier::from_raw(public),
        }
    }

    /// The public half, for whoever verifies this signer's tokens.
    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    /// The private key as PEM, to hand to an API process.
    pub fn private_key_pem(&self) -> String {
        encode_pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The public key as PEM, to hand to a shard process.
    pub fn public_key_pem(&self) -> String {
        self.verifier.public_key_pem()
    }
}

impl TokenVerifier {
    fn from_raw(public: [u8; ED25519_PUBLIC_KEY_LEN]) -> Self {
        Self {
            decoding: DecodingKey::from_ed_der(&public),
            public,
        }
    }

    /// The public key from PEM: `-----BEGIN PUBLIC KEY-----`, or a `CERTIFICATE` whose key
    /// is Ed25519 (its other fields, validity included, are not used). A private key is
    /// refused, however it is labelled.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        const EXPECTED: &str = "PUBLIC KEY";
        if pem.contains("PRIVATE KEY") {
            return Err(KeyError::PrivateKeyForVerifier);
        }
        let (label, der) = decode_pem(pem, EXPECTED)?;
        let spki = match label.as_str() {
            EXPECTED => der,
            "CERTIFICATE" => certificate_spki(&der)?,
            _ => {
                return Err(KeyError::WrongKind {
                    found: label,
                    expected: EXPECTED,
                });
            }
        };
        let raw = spki
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .and_then(|key| <[u8; ED25519_PUBLIC_KEY_LEN]>::try_from(key).ok())
            .ok_or_else(|| {
                KeyError::NotEd25519("the public key is not a 32-byte Ed25519 key".into())
            })?;
        Ok(Self::from_raw(raw))
    }

    /// The public key as PEM (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> String {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&self.public);
        encode_pem("PUBLIC KEY", &spki)
    }
}

/// The SubjectPublicKeyInfo of a DER certificate, re-encoded as DER.
fn certificate_spki(der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| KeyError::NotEd25519(format!("not a certificate: {e}")))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != ED25519_OID {
        return Err(KeyError::NotEd25519(format!(
            "the certificate's key is {}",
            spki.algorithm.oid
        )));
    }
    let Some(key) = spki.subject_public_key.as_bytes() else {
        return Err(KeyError::NotEd25519("the key has unused bits".into()));
    };
    let mut out = ED25519_SPKI_PREFIX.to_vec();
    out.extend_from_slice(key);
    Ok(out)
}

/// The label and DER of the first PEM block in `text`.
fn decode_pem(text: &str, expected: &'static str) -> Result<(String, Vec<u8>), KeyError> {
    let not_pem = || KeyError::NotPem { expected };
    let after_begin = text.split_once("-----BEGIN ").ok_or_else(not_pem)?.1;
    let (label, rest) = after_begin.split_once("-----").ok_or_else(not_pem)?;
    let end = format!("-----END {label}-----");
    let (body, _) = rest.split_once(&end).ok_or_else(not_pem)?;
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD.decode(body).map_err(|_| not_pem())?;
    Ok((label.to_owned(), der))
}

fn encode_pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 is ASCII.
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The public key of `pem`'s private key, checked the way aws-lc-rs reports it (to compare
/// against [`TokenVerifier::public_key_pem`] in tests).
#[cfg(test)]
pub(super) fn spki_of(signer: &TokenSigner) -> Vec<u8> {
    use aws_lc_rs::encoding::AsDer;
    #[allow(clippy::unwrap_used)]
    let pair = Ed25519KeyPair::from_pkcs8(&signer.pkcs8).unwrap();
    #[allow(clippy::unwrap_used)]
    pair.public_key().as_der().unwrap().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A PKCS#8 v1 key as `openssl genpkey -algorithm ed25519` and Helm's `genPrivateKey`
    // write it, and the certificate the chart's `genSelfSignedCertWithKey` made for it.
    const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIF1+cZRf8fOavcCXXW0hIS3OWv1fpDnsdcLpzX81Z2jz
-----END PRIVATE KEY-----
";
    const HELM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----
MIIBNjCB6aADAgECAhAsX3uVBv0isK0CbxiT8cYPMAUGAytlcDAcMRowGAYDVQQD
ExFzdXJnZS1qb2luLXRva2VuczAgFw0yNjEyMDEwMjQwMjNaGA8yMTI2MTEwNzAy
NDAyM1owHDEaMBgGA1UEAxMRc3VyZ2Utam9pbi10b2tlbnMwKjAFBgMrZXADIQC7
L3AoFx/m85RD/O58kmbKZTygcC0P1Xh/E+OAURWSxKM/MD0wDgYDVR0PAQH/BAQD
AgWgMB0GA1UdJQQWMBQGCCsGAQUFBwMBBggrBgEFBQcDAjAMBgNVHRMBAf8EAjAA
MAUGAytlcANBAPRFm/uOCGE7O0ZMXA5wrzGdCmCLFCZ74pzE34jwxc5byP6aEhHP
HYuA2TUwzAObxV9knT4wei2zBCniYGAVwwU=
-----END CERTIFICATE-----
";

    #[test]
    fn pem_round_trips_and_matches_aws_lc() {
        let signer = TokenSigner::generate();
        let again = TokenSigner::from_pem(&signer.private_key_pem()).unwrap();
        assert_eq!(again.verifier().public, signer.verifier().public);
        let verifier = TokenVerifier::from_pem(&signer.public_key_pem()).unwrap();
        assert_eq!(verifier.public, signer.verifier().public);
        let (_, spki) = decode_pem(&signer.public_key_pem(), "PUBLIC KEY").unwrap();
        assert_eq!(spki, spki_of(&signer));
    }

    #[test]
    fn openssl_keys_and_the_charts_certificate_are_read() {
        let signer = TokenSigner::from_pem(OPENSSL_PRIVATE).unwrap();
        // The chart's certificate was made for this key and carries its public half.
        let from_cert = TokenVerifier::from_pem(HELM_CERTIFICATE).unwrap();
        assert_eq!(from_cert.public, signer.verifier().public);
    }

    #[test]
    fn a_verifier_refuses_a_private_key_and_garbage() {
        let signer = TokenSigner::generate();
        assert_eq!(
            TokenVerifier::from_pem(&signer.private_key_pem()).unwrap_err(),
            KeyError::PrivateKeyForVerifier
        );
        // Relabelled, it is still a private key.
        let relabelled = signer
            .private_key_pem()
            .replace("PRIVATE KEY", "PUBLIC KEY");
        assert!(TokenVerifier::from_pem(&relabelled).is_err());
        for garbage in [
            "",
            "secret-of-at-least-32-bytes-0123456789",
            "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(TokenVerifier::from_pem(garbage).is_err(), "{garbage}");
            assert!(TokenSigner::from_pem(garbage).is_err(), "{garbage}");
        }
        assert!(matches!(
            TokenSigner::from_pem(&signer.public_key_pem()),
            Err(KeyError::WrongKind { .. })
        ));
    }
}

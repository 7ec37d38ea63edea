//! Turns the shared flags into the backends the libraries are given: the join-token keys
//! and the shard registry (in memory, or on Redis when a URL is given).

use std::sync::Arc;

use anyhow::Context;
use surge_cluster::{ShardRegistry, TokenSigner, TokenVerifier};

use crate::cli::Common;

/// Which process the keys are for: each holds only the half of the join-token key it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `surge up`: signs and verifies its own tokens; makes up a keypair when none is given.
    Up,
    /// The API: signs; the private key is required.
    Api,
    /// A shard: verifies with the public key only, and refuses the private key.
    Shard,
}

/// The join-token keys of one process.
pub struct Keys {
    pub signer: Option<TokenSigner>,
    pub verifier: Option<TokenVerifier>,
}

pub struct Backends {
    pub registry: Arc<dyn ShardRegistry>,
    pub keys: Keys,
}

pub async fn build(common: &Common, role: Role) -> anyhow::Result<Backends> {
    let keys = keys(common, role)?;
    let registry =
        surge_cluster::registry::connect(common.redis_url.as_deref(), &common.redis_prefix)
            .await
            .context("connecting the shard registry")?;
    Ok(Backends { registry, keys })
}

const PRIVATE_FLAG: &str = "--join-token-private-key (SURGE_JOIN_TOKEN_PRIVATE_KEY)";
const PUBLIC_FLAG: &str = "--join-token-public-key (SURGE_JOIN_TOKEN_PUBLIC_KEY)";

fn keys(common: &Common, role: Role) -> anyhow::Result<Keys> {
    let private = common.join_token_private_key.as_deref();
    let public = common
        .join_token_public_key
        .as_deref()
        .map(TokenVerifier::from_pem)
        .transpose()
        .with_context(|| PUBLIC_FLAG.to_owned())?;
    if role == Role::Shard {
        if private.is_some() {
            anyhow::bail!(
                "{PRIVATE_FLAG} is set, but a shard must hold only the public key \
                 ({PUBLIC_FLAG}): a compromised shard could otherwise mint join tokens \
                 for any room. Remove the private key from the shard's environment."
            );
        }
        let verifier = public.with_context(|| {
            format!("{PUBLIC_FLAG} is required: the API's Ed25519 public key (PEM)")
        })?;
        return Ok(Keys {
            signer: None,
            verifier: Some(verifier),
        });
    }
    let signer = match private {
        Some(pem) => TokenSigner::from_pem(pem).with_context(|| PRIVATE_FLAG.to_owned())?,
        None if role == Role::Up => {
            tracing::info!(
                "no {PRIVATE_FLAG} given: signing join tokens with an ephemeral Ed25519 \
                 keypair generated now (separate shards could not verify them)"
            );
            TokenSigner::generate()
        }
        None => anyhow::bail!(
            "{PRIVATE_FLAG} is required: the Ed25519 private key (PEM, PKCS#8) that signs \
             join tokens, e.g. from `openssl genpkey -algorithm ed25519`"
        ),
    };
    // A public key given alongside must be this key's, or the shards would refuse every token.
    if let Some(public) = &public
        && public.public_key_pem() != signer.public_key_pem()
    {
        anyhow::bail!("{PUBLIC_FLAG} is not the public half of {PRIVATE_FLAG}");
    }
    let verifier = (role == Role::Up).then(|| signer.verifier());
    Ok(Keys {
        signer: Some(signer),
        verifier,
    })
}

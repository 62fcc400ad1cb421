//! Bearer-token authentication: the tokens file (ARCHITECTURE.md section 6)
//! and the admin token created at first start when there is none.
//!
//! Tokens are kept only as SHA-256 digests, so a token file may hold
//! `token_sha256` instead of the secret, and lookups compare digests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use arbiter_core::{Caller, Error, Role};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The file in the data dir that holds the first-start admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    identities: Vec<IdentityEntry>,
}

/// A client certificate that stands for a token (mTLS).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityEntry {
    /// The certificate's subject CN or one of its DNS names.
    common_name: String,
    principal: String,
    tenant: String,
    role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: Option<String>,
    token_sha256: Option<String>,
    principal: String,
    tenant: String,
    role: String,
}

/// The known tokens, by digest, and the client certificate identities.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Caller>,
    /// Certificate name → the caller and a token that stands for it inside
    /// this process (the HTTP layer forwards calls with it).
    identities: HashMap<String, (Caller, String)>,
}

/// The caller of a tokens file entry; errors name the entry.
fn caller_of(entry: &str, principal: String, tenant: String, role: &str) -> anyhow::Result<Caller> {
    let role: Role = role.parse().map_err(|e| anyhow::anyhow!("{entry}: {e}"))?;
    if tenant != "*" {
        arbiter_core::validate::check_id(&tenant).map_err(|e| anyhow::anyhow!("{entry}: tenant: {e}"))?;
    }
    if principal.is_empty() {
        bail!("{entry}: principal must not be empty");
    }
    Ok(Caller {
        principal,
        tenant,
        role,
    })
}

/// A random secret of 32 bytes, hex.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Parses a tokens file's text; errors name the entry and the fix.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: TokenFile =
            toml::from_str(text).context("the tokens file is not valid TOML of [[tokens]] entries")?;
        let mut tokens = Tokens::default();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let n = i + 1;
            let key = match (&entry.token, &entry.token_sha256) {
                (Some(token), None) if !token.is_empty() => digest(token),
                (None, Some(hex_digest)) => hex::decode(hex_digest)
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .with_context(|| format!("token {n}: token_sha256 must be 64 hex digits"))?,
                _ => bail!("token {n}: give exactly one of token or token_sha256"),
            };
            let caller = caller_of(&format!("token {n}"), entry.principal, entry.tenant, &entry.role)?;
            if tokens.by_digest.insert(key, caller).is_some() {
                bail!("token {n}: the same token appears twice");
            }
        }
        for (i, entry) in file.identities.into_iter().enumerate() {
            let what = format!("identity {}", i + 1);
            if entry.common_name.is_empty() {
                bail!("{what}: common_name must not be empty");
            }
            let caller = caller_of(&what, entry.principal, entry.tenant, &entry.role)?;
            let internal = secret();
            tokens.by_digest.insert(digest(&internal), caller.clone());
            if tokens
                .identities
                .insert(entry.common_name.clone(), (caller, internal))
                .is_some()
            {
                bail!("{what}: common_name {} appears twice", entry.common_name);
            }
        }
        if tokens.by_digest.is_empty() {
            bail!(
                "the tokens file has no [[tokens]] or [[identities]] entry, so no caller could \
                 authenticate: add one (token or token_sha256, principal, tenant, role)"
            );
        }
        Ok(tokens)
    }

    /// Reads a tokens file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read tokens file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in tokens file {}", path.display()))
    }

    /// A single admin token for every tenant.
    pub fn admin(token: &str) -> Self {
        let caller = Caller {
            principal: "admin".into(),
            tenant: "*".into(),
            role: Role::Admin,
        };
        Self {
            by_digest: HashMap::from([(digest(token), caller)]),
            identities: HashMap::new(),
        }
    }

    /// The caller a client certificate stands for: the first of its
    /// `names` (subject CN, then DNS names) that an identity maps.
    pub fn identify(&self, names: &[String]) -> Option<Caller> {
        self.identity(names).map(|(caller, _)| caller.clone())
    }

    /// The in-process token of the identity a certificate stands for, with
    /// which the HTTP layer calls the API on the certificate's behalf.
    pub fn identity_token(&self, names: &[String]) -> Option<&str> {
        self.identity(names).map(|(_, token)| token.as_str())
    }

    fn identity(&self, names: &[String]) -> Option<&(Caller, String)> {
        names.iter().find_map(|n| self.identities.get(n))
    }

    /// Resolves an `authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, Error> {
        let header = header.ok_or_else(|| {
            Error::Unauthenticated(
                "missing credentials; send the header authorization: Bearer <token>".into(),
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Error::Unauthenticated("the authorization header must be \"Bearer <token>\"".into())
            })?;
        self.by_digest.get(&digest(token)).cloned().ok_or_else(|| {
            Error::Unauthenticated("unknown token; check the token or ask an admin for one".into())
        })
    }
}

/// Loads the first-start admin token from the data dir, creating it (mode
/// 0600) if it does not exist. Returns the token and its path.
pub fn bootstrap_admin(data_dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let token =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok((token.trim().to_string(), path));
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("arb_{}", hex::encode(bytes));
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((token, path))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[tokens]]
token = "dev-acme-editor"
principal = "alice"
tenant = "acme"
role = "editor"

[[tokens]]
token_sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
principal = "ops"
tenant = "*"
role = "admin"
"#;

    #[test]
    fn a_file_without_tokens_is_refused() {
        for text in ["", "# only comments\n", "tokens = []\n"] {
            let err = Tokens::parse(text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("no [[tokens]] or [[identities]] entry"),
                "{text:?}: {err}"
            );
        }
        // The overlays' files ship without a token, so a deployment that
        // did not generate one refuses to start.
        for overlay in ["single", "ha"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/kubernetes/overlays")
                .join(overlay)
                .join("tokens.toml");
            assert!(Tokens::load(&path).is_err(), "{overlay}");
        }
    }

    #[test]
    fn tokens_resolve_by_secret_or_digest() {
        let tokens = Tokens::parse(FILE).unwrap_or_default();
        let alice = tokens.authenticate(Some("Bearer dev-acme-editor"));
        assert_eq!(
            alice.map(|c| (c.principal, c.role)).ok(),
            Some(("alice".into(), Role::Editor))
        );
        // sha256("hello")
        assert_eq!(
            tokens.authenticate(Some("Bearer hello")).map(|c| c.tenant).ok(),
            Some("*".into())
        );
        assert!(matches!(
            tokens.authenticate(Some("Bearer nope")),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            tokens.authenticate(None),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            tokens.authenticate(Some("Basic x")),
            Err(Error::Unauthenticated(_))
        ));
    }

    #[test]
    fn bad_entries_are_named() {
        let bad = "[[tokens]]\ntoken = \"x\"\nprincipal = \"p\"\ntenant = \"acme\"\nrole = \"root\"\n";
        let err = Tokens::parse(bad).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("token 1"), "{err}");
    }

    #[test]
    fn identities_map_certificate_names_and_an_inner_token() {
        let file = "[[identities]]\ncommon_name = \"ci-bot\"\nprincipal = \"bot\"\ntenant = \"acme\"\nrole = \"viewer\"\n";
        let tokens = Tokens::parse(file).unwrap_or_else(|e| panic!("{e:#}"));
        let names = |n: &[&str]| n.iter().map(ToString::to_string).collect::<Vec<_>>();
        let bot = tokens.identify(&names(&["other", "ci-bot"]));
        assert_eq!(bot.map(|c| c.principal), Some("bot".to_string()));
        assert!(tokens.identify(&names(&["nobody"])).is_none());
        let inner = tokens
            .identity_token(&names(&["ci-bot"]))
            .unwrap_or_default()
            .to_string();
        assert_eq!(inner.len(), 64);
        let caller = tokens.authenticate(Some(&format!("Bearer {inner}")));
        assert_eq!(caller.map(|c| c.role).ok(), Some(Role::Viewer));
        let twice = format!("{file}{file}");
        let err = format!("{:#}", Tokens::parse(&twice).unwrap_err());
        assert!(err.contains("identity 2"), "{err}");
    }

    #[test]
    fn the_admin_token_is_created_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (first, path) = bootstrap_admin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let (second, _) = bootstrap_admin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, second);
        assert!(path.exists());
    }
}

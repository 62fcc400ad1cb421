//! Managing policies: the module upload around the generic create and
//! update of the `Policy` kind. A module is checked by the policy runtime
//! (it must be a component of the policy world) and stored once under its
//! SHA-256; the policy keeps only the digest, so a later update can go back
//! to an earlier module by digest alone.

use std::sync::Arc;

use arbiter_api::v1::Policy;
use arbiter_store::Store;
use sha2::{Digest, Sha256};

use crate::auth::{Access, Caller};
use crate::engine::Engine;
use crate::error::{Error, invalid};
use crate::kinds::POLICY;
use crate::names;
use crate::requests::{CreateRequest, UpdateRequest};

/// The hex SHA-256 of a module.
pub fn module_digest(module: &[u8]) -> String {
    hex::encode(Sha256::digest(module))
}

impl<S: Store> Engine<S> {
    /// Creates a policy from a request that carries its module (or the
    /// digest of a module uploaded before).
    pub async fn create_policy(
        &self,
        caller: &Caller,
        mut req: CreateRequest<Policy>,
    ) -> Result<Policy, Error> {
        let tenant = names::parse_parent("parent", &req.parent)?;
        caller.authorize(&tenant, Access::Admin)?;
        let mut violations = Vec::new();
        self.policies.config.check(&req.resource, &mut violations);
        invalid(violations)?;
        self.attach_module(&mut req.resource, req.validate_only).await?;
        let policy = &req.resource;
        self.check_settings(&policy.module_sha256, policy, policy.settings.as_ref())
            .await?;
        self.create(caller, req).await
    }

    /// Updates a policy; a new module, or the digest of an earlier one,
    /// makes a new revision that judges the next request.
    pub async fn update_policy(
        &self,
        caller: &Caller,
        mut req: UpdateRequest<Policy>,
    ) -> Result<Policy, Error> {
        let name = names::parse_name("policy.name", &POLICY, &req.resource.name)?;
        caller.authorize(&name.tenant, Access::Admin)?;
        let mut violations = Vec::new();
        self.policies.config.check(&req.resource, &mut violations);
        invalid(violations)?;
        let mask = &mut req.update_mask;
        for path in mask.iter_mut().filter(|p| *p == "module") {
            "module_sha256".clone_into(path);
        }
        let masks = |field: &str| {
            mask.is_empty()
                || mask
                    .iter()
                    .any(|p| p == "*" || p == field || p.starts_with(&format!("{field}.")))
        };
        let (module_masked, settings_masked) = (masks("module_sha256"), masks("settings"));
        if module_masked {
            self.attach_module(&mut req.resource, req.validate_only).await?;
        } else {
            req.resource.module.clear();
        }
        if module_masked || settings_masked {
            // The module and settings the policy will have: what the
            // request sets, the rest as the policy has them now.
            let current = self
                .get_stored(&name.key(&POLICY))
                .await?
                .map(|stored| crate::engine::decode::<Policy>(&name.key(&POLICY), &stored))
                .transpose()?;
            let digest = match (&current, module_masked && !req.resource.module_sha256.is_empty()) {
                (_, true) => req.resource.module_sha256.clone(),
                (Some(current), false) => current.module_sha256.clone(),
                (None, false) => String::new(),
            };
            let settings = if settings_masked {
                req.resource.settings.as_ref()
            } else {
                current.as_ref().and_then(|c| c.settings.as_ref())
            };
            self.check_settings(&digest, &req.resource, settings).await?;
        }
        self.update(caller, req).await
    }

    /// Asks the module `digest` whether it accepts `settings`: a refusal is
    /// `INVALID_FIELD` on `policy.settings` with the module's message.
    pub(crate) async fn check_settings(
        &self,
        digest: &str,
        policy: &Policy,
        settings: Option<&prost_types::Struct>,
    ) -> Result<(), Error> {
        if digest.is_empty() {
            return Ok(());
        }
        let json = crate::policy::settings_json(settings);
        self.policies
            .ensure_loaded(&*self.store, digest)
            .await
            .map_err(|fault| Error::field("policy.module_sha256", fault.detail))?;
        let verdict = self
            .policies
            .runtime()?
            .validate_settings(
                digest.to_string(),
                self.policies.config.limits(policy),
                json.to_string(),
            )
            .await;
        match verdict {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Error::field(
                "policy.settings",
                crate::policy::truncate(&why, 1024),
            )),
            Err(fault) if fault.kind == crate::policy::FaultKind::Busy => Err(Error::RateLimited {
                what: format!("the module's validate-settings could not run: {}", fault.detail),
                limit: "policy evaluation slots".into(),
                retry_after: std::time::Duration::from_secs(1),
            }),
            Err(fault) => Err(Error::field(
                "policy.settings",
                format!(
                    "the module's validate-settings failed ({}): {}",
                    fault.kind.as_str(),
                    fault.detail
                ),
            )),
        }
    }

    /// Replaces the request's module bytes with their digest, after the
    /// runtime accepted them and (unless only validating) the store kept
    /// them. A digest alone must name a module this server has.
    pub(crate) async fn attach_module(&self, policy: &mut Policy, validate_only: bool) -> Result<(), Error> {
        let module = std::mem::take(&mut policy.module);
        if module.is_empty() {
            if policy.module_sha256.is_empty() {
                return Ok(());
            }
            let digest = policy.module_sha256.clone();
            let stored = self
                .store()
                .get_blob(digest.as_bytes())
                .await
                .map_err(|e| Error::storage("reading a policy module", e))?
                .ok_or_else(|| {
                    Error::field(
                        "policy.module_sha256",
                        format!("no module with digest {digest} was uploaded here; send the module itself in policy.module"),
                    )
                })?;
            policy.module_size_bytes = stored.len() as u64;
            return self.load_module(digest, stored.into()).await;
        }
        let max = self.policies.config.max_module_bytes;
        if module.len() > max {
            return Err(Error::field(
                "policy.module",
                format!(
                    "is {} bytes; this server accepts modules of at most {max} bytes",
                    module.len()
                ),
            ));
        }
        let digest = module_digest(&module);
        if !policy.module_sha256.is_empty() && policy.module_sha256 != digest {
            return Err(Error::field(
                "policy.module_sha256",
                format!(
                    "is {} but the module's SHA-256 is {digest}; send one of them, or matching ones",
                    policy.module_sha256
                ),
            ));
        }
        let module: Arc<[u8]> = module.into();
        self.load_module(digest.clone(), Arc::clone(&module)).await?;
        if !validate_only {
            self.store()
                .put_blob(digest.as_bytes(), module.to_vec())
                .await
                .map_err(|e| Error::storage("storing the policy module", e))?;
        }
        policy.module_size_bytes = module.len() as u64;
        policy.module_sha256 = digest;
        Ok(())
    }

    async fn load_module(&self, digest: String, module: Arc<[u8]>) -> Result<(), Error> {
        self.policies
            .runtime()?
            .load(digest, module)
            .await
            .map_err(|e| match e {
                crate::policy::LoadError::Invalid(why) => Error::field("policy.module", why),
                crate::policy::LoadError::Busy(why) => Error::RateLimited {
                    what: why,
                    limit: "module compiles at once".into(),
                    retry_after: std::time::Duration::from_secs(5),
                },
            })
    }
}

//! Who is calling and what they may do: a principal, the tenant its token
//! grants (or every tenant), and a role.

use crate::error::Error;

/// The roles, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads resources.
    Viewer,
    /// Reads and writes resources.
    Editor,
    /// Also manages policies.
    Admin,
}

impl Role {
    /// The role's name as written in token files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}; use viewer, editor or admin")),
        }
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading resources.
    Read,
    /// Writing resources.
    Write,
    /// Managing policies.
    Admin,
}

impl Access {
    fn required(self) -> Role {
        match self {
            Access::Read => Role::Viewer,
            Access::Write => Role::Editor,
            Access::Admin => Role::Admin,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal, recorded as `created_by`/`updated_by`.
    pub principal: String,
    /// The tenant the token grants; `*` grants every tenant.
    pub tenant: String,
    /// The caller's role.
    pub role: Role,
}

impl Caller {
    /// Checks that the caller may perform `access` in `tenant`.
    pub fn authorize(&self, tenant: &str, access: Access) -> Result<(), Error> {
        if self.tenant != "*" && self.tenant != tenant {
            return Err(Error::TenantForbidden {
                principal: self.principal.clone(),
                tenant: tenant.to_string(),
            });
        }
        let required = access.required();
        if self.role < required {
            return Err(Error::RoleForbidden {
                principal: self.principal.clone(),
                role: self.role.as_str(),
                required: required.as_str(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tenant: &str, role: Role) -> Caller {
        Caller {
            principal: "p".into(),
            tenant: tenant.into(),
            role,
        }
    }

    #[test]
    fn tenant_and_role_are_both_checked() {
        assert!(
            caller("acme", Role::Editor)
                .authorize("acme", Access::Write)
                .is_ok()
        );
        assert!(caller("*", Role::Viewer).authorize("other", Access::Read).is_ok());
        assert!(matches!(
            caller("acme", Role::Admin).authorize("globex", Access::Read),
            Err(Error::TenantForbidden { .. })
        ));
        assert!(matches!(
            caller("acme", Role::Viewer).authorize("acme", Access::Write),
            Err(Error::RoleForbidden {
                required: "editor",
                ..
            })
        ));
    }
}

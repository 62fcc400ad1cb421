//! Roles and what operations need: plain values, so that kinds can name
//! the access their methods need without depending on authentication.

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
    pub(crate) fn required(self) -> Role {
        match self {
            Access::Read => Role::Viewer,
            Access::Write => Role::Editor,
            Access::Admin => Role::Admin,
        }
    }
}

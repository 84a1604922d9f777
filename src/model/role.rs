//! What a caller of the API may do: three roles, each including the one below it.

use serde::{Deserialize, Serialize};

/// A caller's role. Ordered: a role may do everything the roles below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every read: listings, objects, histories, logs, the event stream, metrics.
    Viewer,
    /// A viewer who may also cordon, uncordon and drain workers, thaw a storm freeze, restart
    /// a task, suspend or resume its schedule, and preview a placement.
    Operator,
    /// Everything: creating, changing and deleting tasks, budgets and checkpoints.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Its name as config files, the spec and problem documents spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// True when this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_the_ones_below() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Admin.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        for role in Role::ALL {
            assert!(role.allows(role));
            let text = serde_json::to_string(&role).expect("json");
            assert_eq!(text, format!("\"{role}\""));
            assert_eq!(serde_json::from_str::<Role>(&text).expect("parse"), role);
        }
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
    }
}

//! User and group names to numeric ids, for the `owner` and `group` of private keys.
//!
//! Names are looked up through the system's user database (NSS: `getpwnam_r`, `getgrnam_r`),
//! so accounts from LDAP, SSSD or extrausers resolve as they do for `chown`; numeric ids are
//! taken as they are and work everywhere.

use nix::unistd::{Group, User};

use crate::text::escape_line;

/// A user or group name that gives no id.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user database has no such account.
    #[error(
        "no {what} named \"{}\" in the system's user database; create it or give a numeric id",
        escape_line(name)
    )]
    Unknown {
        /// `user` or `group`.
        what: &'static str,
        /// The name as configured.
        name: String,
    },
    /// The user database could not be asked (an NSS module failed).
    #[error("cannot look up {what} \"{}\": {source}", escape_line(name))]
    Lookup {
        /// `user` or `group`.
        what: &'static str,
        /// The name as configured.
        name: String,
        /// What the lookup returned.
        source: nix::errno::Errno,
    },
}

/// The uid of `user` (a name or a number).
pub fn uid(user: &str) -> Result<u32, Error> {
    if let Ok(id) = user.parse::<u32>() {
        return Ok(id);
    }
    match User::from_name(user) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(Error::Unknown {
            what: "user",
            name: user.to_owned(),
        }),
        Err(source) => Err(Error::Lookup {
            what: "user",
            name: user.to_owned(),
            source,
        }),
    }
}

/// The gid of `group` (a name or a number).
pub fn gid(group: &str) -> Result<u32, Error> {
    if let Ok(id) = group.parse::<u32>() {
        return Ok(id);
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(Error::Unknown {
            what: "group",
            name: group.to_owned(),
        }),
        Err(source) => Err(Error::Lookup {
            what: "group",
            name: group.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_to_the_user_database_and_numbers_resolve() {
        assert_eq!(uid("1234").unwrap(), 1234);
        assert_eq!(gid("4321").unwrap(), 4321);
        assert_eq!(uid("root").unwrap(), 0);
        assert_eq!(gid("root").unwrap(), 0);
        // `nobody` is 65534 on Debian; whatever it is, NSS and the id tool agree.
        let id = std::process::Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .expect("id (coreutils) is needed");
        let want: u32 = String::from_utf8_lossy(&id.stdout).trim().parse().unwrap();
        assert_eq!(uid("nobody").unwrap(), want);
    }

    #[test]
    fn an_unknown_name_is_an_error_that_names_it_escaped() {
        let e = gid("surely-no-such-group-here").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no group named \"surely-no-such-group-here\" in the system's user database; \
             create it or give a numeric id"
        );
        let e = uid("no\u{1b}[31muser\nx").unwrap_err();
        assert!(e.to_string().contains("no\\x1b[31muser\\x0ax"), "{e}");
        // A NUL cannot be in a name the database holds.
        assert!(matches!(uid("a\0b"), Err(Error::Unknown { .. })));
    }
}

//! User and group names to numeric ids, for the `owner` and `group` of private keys.
//!
//! Reads the local `/etc/passwd` and `/etc/group` (the accounts services run as are local);
//! numeric ids are taken as they are and work everywhere.

/// The uid of `user` (a name or a number).
pub fn uid(user: &str) -> Result<u32, String> {
    lookup(user, "/etc/passwd", "user")
}

/// The gid of `group` (a name or a number).
pub fn gid(group: &str) -> Result<u32, String> {
    lookup(group, "/etc/group", "group")
}

fn lookup(name: &str, file: &str, what: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text =
        crate::fsutil::read_regular_text(std::path::Path::new(file), crate::fsutil::MAX_FILE)
            .map_err(|e| format!("cannot read {file} to look up {what} \"{name}\": {e}"))?;
    find(&text, name).ok_or_else(|| {
        format!("no {what} named \"{name}\" in {file}; create it or give a numeric id")
    })
}

/// The id of `name` in passwd/group text (`name:x:id:...`).
fn find(text: &str, name: &str) -> Option<u32> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\n";
        assert_eq!(find(passwd, "www-data"), Some(33));
        assert_eq!(find(passwd, "root"), Some(0));
        assert_eq!(find(passwd, "nobody"), None);
        assert_eq!(uid("1234"), Ok(1234));
        assert_eq!(uid("root"), Ok(0));
        assert!(
            gid("surely-no-such-group-here")
                .unwrap_err()
                .contains("no group named")
        );
    }
}

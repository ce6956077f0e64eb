//! The account files, `/etc/passwd` and `/etc/group`, read directly: no NSS (the binary is
//! static and must work in any image, D16). One parser for every reader: credentials for a spawn,
//! names in file listings, a request identity's home.

/// One `/etc/passwd` entry (`name:password:uid:gid:gecos:home:shell`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User<'a> {
    pub name: &'a str,
    pub uid: u32,
    /// The primary group; `None` when the field is missing or not a number.
    pub gid: Option<u32>,
    /// The home directory; `None` when missing or not absolute.
    pub home: Option<&'a str>,
}

/// One `/etc/group` entry (`name:password:gid:member,member,…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group<'a> {
    pub name: &'a str,
    pub gid: u32,
    /// The comma-separated member list as written (empty when missing).
    members: &'a str,
}

impl Group<'_> {
    /// Whether user `name` is listed as a member.
    pub fn has_member(&self, name: &str) -> bool {
        self.members.split(',').any(|m| m.trim() == name)
    }
}

/// The contents of `/etc/passwd` (empty when it cannot be read: no names, nothing fails).
pub fn read_passwd() -> String {
    std::fs::read_to_string("/etc/passwd").unwrap_or_default()
}

/// The contents of `/etc/group` (empty when it cannot be read).
pub fn read_group() -> String {
    std::fs::read_to_string("/etc/group").unwrap_or_default()
}

/// The well-formed entries of passwd text, in file order. Comment lines, lines without a name
/// and lines whose uid is not a number are skipped.
pub fn users(passwd: &str) -> impl Iterator<Item = User<'_>> {
    passwd.lines().filter_map(|line| {
        let (name, id, mut rest) = head(line)?;
        let gid = rest.next().and_then(|g| g.parse().ok());
        let home = rest.nth(1).filter(|h| h.starts_with('/'));
        Some(User { name, uid: id, gid, home })
    })
}

/// The well-formed entries of group text, in file order (same rules as [`users`]).
pub fn groups(group: &str) -> impl Iterator<Item = Group<'_>> {
    group.lines().filter_map(|line| {
        let (name, id, mut rest) = head(line)?;
        Some(Group { name, gid: id, members: rest.next().unwrap_or("") })
    })
}

/// The first entry for `uid`.
pub fn user(passwd: &str, uid: u32) -> Option<User<'_>> {
    users(passwd).find(|u| u.uid == uid)
}

/// Name, id and the fields after them of one account line.
fn head(line: &str) -> Option<(&str, u32, std::str::Split<'_, char>)> {
    if line.starts_with('#') {
        return None;
    }
    let mut f = line.split(':');
    let name = f.next().filter(|n| !n.is_empty())?;
    let _password = f.next()?;
    let id = f.next()?.parse().ok()?;
    Some((name, id, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "# comment\nroot:x:0:0:root:/root:/bin/bash\nbad:x:notanumber:0::/:/x\n:x:5:5::/:/x\n\
                          short:x:7\nu:x:1000:100::/home/u:/bin/sh\nrel:x:8:8::home:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:u, other\nlonely:x:11\n";

    #[test]
    fn passwd_entries_with_optional_fields() {
        let all: Vec<User> = users(PASSWD).collect();
        assert_eq!(all.iter().map(|u| u.name).collect::<Vec<_>>(), ["root", "short", "u", "rel"]);
        assert_eq!(user(PASSWD, 1000), Some(User { name: "u", uid: 1000, gid: Some(100), home: Some("/home/u") }));
        assert_eq!(user(PASSWD, 7), Some(User { name: "short", uid: 7, gid: None, home: None }));
        assert_eq!(user(PASSWD, 8).unwrap().home, None, "a relative home is no home");
        assert_eq!(user(PASSWD, 4242), None);
    }

    #[test]
    fn group_entries_and_members() {
        let all: Vec<Group> = groups(GROUP).collect();
        assert_eq!(
            all.iter().map(|g| (g.name, g.gid)).collect::<Vec<_>>(),
            [("root", 0), ("wheel", 10), ("lonely", 11)]
        );
        assert!(all[1].has_member("u") && all[1].has_member("other"));
        assert!(!all[1].has_member("root") && !all[2].has_member("u"));
    }
}

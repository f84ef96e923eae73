//! Which container guerite itself runs in, if any, read from /proc without asking Docker, so
//! that it is never acted on (replacing it would kill the run half-way).

/// The 64-hex container ID, from this process's mountinfo (Docker bind-mounts /etc/hostname and
/// friends from `/var/lib/docker/containers/<id>/`) or, failing that, its cgroup path.
pub fn detect() -> Option<String> {
    let read = |p| std::fs::read_to_string(p).unwrap_or_default();
    from_mountinfo(&read("/proc/self/mountinfo"))
        .or_else(|| from_cgroup(&read("/proc/self/cgroup")))
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn from_mountinfo(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| l.contains("/etc/hostname") || l.contains("/etc/resolv.conf"))
        .flat_map(|l| l.split('/'))
        .find(|w| is_id(w))
        .map(str::to_string)
}

fn from_cgroup(text: &str) -> Option<String> {
    text.lines()
        .flat_map(|l| l.split(['/', '-', '.', ':']))
        .find(|w| is_id(w))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn finds_the_id_where_docker_puts_it() {
        let mountinfo = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(from_mountinfo(&mountinfo).as_deref(), Some(ID));
        assert_eq!(
            from_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            from_cgroup(&format!("12:pids:/docker/{ID}\n")).as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn nothing_on_a_host() {
        assert_eq!(from_mountinfo("1 0 8:1 / / rw - ext4 /dev/vda rw\n"), None);
        assert_eq!(
            from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
    }
}

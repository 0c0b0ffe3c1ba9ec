//! Open-file limit. Each session holds two descriptors (client and upstream), so the usual soft
//! limit of 1024 caps a gateway near 500 sessions while the hard limit allows far more. Like
//! Go's runtime and most servers, the gateway raises its soft limit to the hard one at start.

/// Descriptors the gateway needs besides its sessions (listeners, plugin files, the watcher).
const RESERVED: u64 = 64;

/// Raises the soft limit to the hard one and warns when `max_connections` cannot fit in it.
pub fn raise_for(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let needed = 2 * max_connections as u64 + RESERVED;
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files = limit.rlim_cur,
            needed,
            max_connections,
            "the open-file limit is below what max_connections needs; raise it (ulimit -n, LimitNOFILE=) or lower max_connections"
        );
    } else {
        tracing::debug!(open_files = limit.rlim_cur, "open-file limit");
    }
}

//! TCP_NODELAY on the PostgreSQL pool's connections. sqlx 0.9.0 dropped it
//! (sqlx issue #4335; the fix, PR #4336, is merged but not yet released),
//! so Nagle's algorithm held back the last segment of any message longer
//! than one TCP segment until the server's delayed ACK, about 40 ms later:
//! in the ingest bench, a batch's key probe and its roll-up upsert each
//! waited that long, half the time of every PostgreSQL write. sqlx gives no
//! access to its socket, so after each new connection the process's TCP
//! sockets to the database's port get the option. Remove this module once
//! a sqlx release sets it again.

use std::os::fd::{BorrowedFd, RawFd};

/// Sets TCP_NODELAY on this process's TCP sockets whose peer port is
/// `port`; returns how many such sockets there are and on how many it was
/// off. Linux (`/proc/self/fd`); a no-op elsewhere, and for Unix-socket
/// connections.
pub fn set_on_sockets_to(port: u16) -> (usize, usize) {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return (0, 0);
    };
    let (mut sockets, mut turned_on) = (0, 0);
    for entry in fds.flatten() {
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: the descriptor is borrowed for three socket calls only. One
        // closed meanwhile makes them fail (EBADF); one reused for another
        // socket at worst gets TCP_NODELAY, which changes only latency.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let socket = socket2::SockRef::from(&fd);
        let to_database = socket
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.port() == port);
        if !to_database {
            continue;
        }
        sockets += 1;
        if socket.tcp_nodelay().is_ok_and(|on| !on) && socket.set_tcp_nodelay(true).is_ok() {
            turned_on += 1;
        }
    }
    (sockets, turned_on)
}

//! UDP listeners: several SO_REUSEPORT sockets per address, each read by its own thread with
//! `recvmmsg` (up to 64 datagrams per system call) into preallocated buffers, and a large
//! SO_RCVBUF. The kernel hashes each exporter onto one socket, so an exporter's datagrams
//! stay in order.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

pub const BATCH: usize = 64;
/// Larger than any flow export datagram seen in practice (IPFIX allows 65535, exporters
/// stay under the path MTU, jumbo frames at 9000); a longer datagram is cut by the kernel,
/// so it is dropped whole and counted (`MSG_TRUNC`) rather than decoded in part.
pub const MAX_DATAGRAM: usize = 9216;

pub fn bind(addr: SocketAddr, receive_buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_recv_buffer_size(receive_buffer)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Reusable receive buffers for one `recvmmsg` call.
pub struct Batch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    sources: [IpAddr; BATCH],
    /// Datagrams of this batch longer than `MAX_DATAGRAM` (cut by the kernel).
    truncated: [bool; BATCH],
    count: usize,
    /// Truncated datagrams in the last `receive`.
    pub truncated_count: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            bufs: vec![0; BATCH * MAX_DATAGRAM],
            lens: [0; BATCH],
            sources: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); BATCH],
            truncated: [false; BATCH],
            count: 0,
            truncated_count: 0,
        }
    }
}

impl Batch {
    /// The datagrams received whole.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &[u8])> {
        (0..self.count).filter(|i| !self.truncated[*i]).map(|i| {
            (
                self.sources[i],
                &self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + self.lens[i]],
            )
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Receive up to `BATCH` datagrams: blocks (up to the socket's read timeout) for the
    /// first, then takes what is already queued. Returns 0 on timeout.
    pub fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        // SAFETY: every pointer handed to recvmmsg points into buffers owned by `self` or
        // this stack frame, sized as declared, and outlives the call.
        unsafe {
            let mut names: [libc::sockaddr_storage; BATCH] = std::mem::zeroed();
            let mut iovs: [libc::iovec; BATCH] = std::mem::zeroed();
            let mut msgs: [libc::mmsghdr; BATCH] = std::mem::zeroed();
            for i in 0..BATCH {
                iovs[i].iov_base =
                    self.bufs.as_mut_ptr().add(i * MAX_DATAGRAM) as *mut libc::c_void;
                iovs[i].iov_len = MAX_DATAGRAM;
                msgs[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
                msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            let n = libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            );
            if n < 0 {
                let e = std::io::Error::last_os_error();
                self.count = 0;
                self.truncated_count = 0;
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted => Ok(0),
                    _ => Err(e),
                };
            }
            let n = n as usize;
            self.truncated_count = 0;
            for i in 0..n {
                self.lens[i] = (msgs[i].msg_len as usize).min(MAX_DATAGRAM);
                self.sources[i] = source_ip(&names[i]);
                self.truncated[i] = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                self.truncated_count += usize::from(self.truncated[i]);
            }
            self.count = n;
            Ok(n)
        }
    }
}

fn source_ip(s: &libc::sockaddr_storage) -> IpAddr {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let a = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let v6 = Ipv6Addr::from(a.sin6_addr.s6_addr);
            v6.to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6))
        }
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// Datagrams the kernel dropped on UDP sockets bound to `port` (receive buffer full), from
/// the `drops` column of /proc/net/udp and /proc/net/udp6.
pub fn kernel_drops(port: u16) -> u64 {
    let mut total = 0;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = cols.get(1) else { continue };
            let Some(p) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            if p == port {
                total += cols.last().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_longer_than_the_buffer_are_counted_and_dropped_whole() {
        let socket = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let to = socket.local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&vec![7u8; MAX_DATAGRAM + 800], to).unwrap();
        sender.send_to(b"small", to).unwrap();
        let mut batch = Batch::default();
        let mut seen = 0;
        let mut truncated = 0;
        while seen < 2 {
            seen += batch.receive(&socket).unwrap();
            truncated += batch.truncated_count;
        }
        assert_eq!(truncated, 1);
        let whole: Vec<&[u8]> = batch.iter().map(|(_, d)| d).collect();
        assert!(
            whole.iter().all(|d| d.len() < MAX_DATAGRAM),
            "{:?}",
            whole.len()
        );
        assert!(whole.contains(&&b"small"[..]));
    }
}

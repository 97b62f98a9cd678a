//! `kurz healthcheck`: one `GET /healthz` to the local server over plain TCP, for container
//! health checks in an image with no shell or curl. Bounded: 2 s to connect, 2 s to answer.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the kurz listening on `bind` (an unspecified address means this host) for `/healthz`.
pub fn check(bind: SocketAddr) -> Result<(), String> {
    let target = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bind.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bind.port())
        }
        _ => bind,
    };
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let io = |e: std::io::Error| format!("{target}: {e}");
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(io)?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split(' ').nth(1).unwrap_or("none");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{target} answered /healthz with status {status}"))
    }
}

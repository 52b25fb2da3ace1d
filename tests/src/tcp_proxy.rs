//! A TCP forwarder on loopback standing for what sits in front of a server (a load balancer):
//! tests stop it to make the server unreachable for a moment — connections refused, open ones
//! cut — and start it again on the same port.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct TcpProxy {
    pub port: u16,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl TcpProxy {
    /// Listen on a free loopback port; connections are refused until `set_upstream`.
    pub fn start() -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let mut proxy = TcpProxy {
            port,
            upstream: Default::default(),
            open: Default::default(),
            running: None,
        };
        proxy.serve(listener);
        proxy
    }

    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = Some(upstream);
    }

    /// Stop listening (new connections are refused) and cut the open ones.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        if self.running.is_none() {
            let listener =
                TcpListener::bind(("127.0.0.1", self.port)).expect("binding the proxy again");
            self.serve(listener);
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, open, stopping) = (self.upstream.clone(), self.open.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let target = *upstream.lock().unwrap();
                        if let Some(server) = target.and_then(|a| TcpStream::connect(a).ok()) {
                            client.set_nonblocking(false).unwrap();
                            let mut open = open.lock().unwrap();
                            open.push(client.try_clone().unwrap());
                            open.push(server.try_clone().unwrap());
                            drop(open);
                            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                            pipe(server, client);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.running = Some((stop, thread));
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

//! `wasmfn isolate-network`: takes every network interface but loopback down in the current
//! network namespace.
//!
//! A compile Job runs it as an init container (root, `NET_ADMIN` only) before the builder
//! container, which shares the pod's network namespace and has no capability to bring an
//! interface back up: build scripts and macros then reach nothing but loopback, on any cluster,
//! whether or not its network plugin enforces NetworkPolicy.

use std::ffi::CString;

use anyhow::{bail, Context as _, Result};

/// The interfaces of this network namespace (asked of the kernel, not read from `/sys`, which
/// shows the namespace it was mounted in).
fn interfaces() -> Result<Vec<String>> {
    // SAFETY: if_nameindex returns a list ending with a zeroed entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(std::io::Error::last_os_error()).context("listing the network interfaces");
    }
    let mut names = Vec::new();
    let mut entry = list;
    // SAFETY: entries up to the terminating one are valid, with NUL-terminated names.
    unsafe {
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    names.sort();
    Ok(names)
}

/// A control socket for interface ioctls, closed on drop.
struct ControlSocket(libc::c_int);

impl ControlSocket {
    fn open() -> Result<Self> {
        // SAFETY: plain system call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening a control socket");
        }
        Ok(ControlSocket(fd))
    }

    fn request(name: &str) -> Result<libc::ifreq> {
        let c_name = CString::new(name).context("an interface name with a NUL byte")?;
        let bytes = c_name.as_bytes_with_nul();
        if bytes.len() > libc::IFNAMSIZ {
            bail!("interface name {name:?} is too long");
        }
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
            *slot = *byte as libc::c_char;
        }
        Ok(request)
    }

    fn flags(&self, name: &str) -> Result<libc::c_short> {
        let mut request = Self::request(name)?;
        // SAFETY: a valid socket and a valid ifreq for SIOCGIFFLAGS.
        if unsafe { libc::ioctl(self.0, libc::SIOCGIFFLAGS, &mut request) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("reading the flags of {name}"));
        }
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        Ok(unsafe { request.ifr_ifru.ifru_flags })
    }

    fn set_flags(&self, name: &str, flags: libc::c_short) -> Result<()> {
        let mut request = Self::request(name)?;
        request.ifr_ifru.ifru_flags = flags;
        // SAFETY: a valid socket and a valid ifreq for SIOCSIFFLAGS.
        if unsafe { libc::ioctl(self.0, libc::SIOCSIFFLAGS, &request) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("taking {name} down (the container needs NET_ADMIN)"));
        }
        Ok(())
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns.
        unsafe {
            libc::close(self.0);
        }
    }
}

pub(crate) fn isolate_network() -> Result<i32> {
    let socket = ControlSocket::open()?;
    let up = libc::IFF_UP as libc::c_short;
    let mut down = Vec::new();
    for name in interfaces()?.into_iter().filter(|n| n != "lo") {
        let flags = socket.flags(&name)?;
        if flags & up != 0 {
            socket.set_flags(&name, flags & !up)?;
        }
        // Checked, not assumed: an interface still up is a failure.
        if socket.flags(&name)? & up != 0 {
            bail!("{name} is still up after taking it down");
        }
        down.push(name);
    }
    println!(
        "network isolated: {} down; only loopback remains",
        if down.is_empty() {
            "no interface besides loopback was".to_owned()
        } else {
            down.join(", ")
        }
    );
    Ok(0)
}

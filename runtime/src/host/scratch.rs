//! A component's scratch directory: a small private directory, granted by the manifest
//! (`grants.scratch = "1MiB"`), preopened through WASI as `/scratch`, for state that must
//! survive restarts and new versions (a cursor, a cache of what was sent). One per tenant and
//! component, under `<data_dir>/scratch/<tenant>/<component>/`; deleted with the component.
//!
//! WASI has no notion of a quota, and the directory lives on the operator's disk, so the host
//! keeps one: at the start of each call it measures what the directory holds (bytes and
//! entries), and during the call every byte written — through `descriptor.write`, a file
//! stream, or growing a file with `set-size` — is taken from what is left. A write past the
//! quota fails like a write to a full disk: `insufficient-space` from `descriptor.write`,
//! and a failed stream write (which wasi-libc, hence Rust's `std::fs`, reports as an I/O
//! error, `EIO`) once what is left is written; creating an entry past [`MAX_ENTRIES`] fails
//! with `insufficient-space` too. Hard and symbolic links are refused.
//! Bytes overwritten in place count again until the next call measures the directory; a
//! write or a stream past the end of a file counts the gap too.
//!
//! The quota is enforced by wrapping `wasi:filesystem/types` (the host functions delegate to
//! wasmtime-wasi's, except the ones that write or create) and the output streams it hands
//! out; the linker is given these instead of wasmtime-wasi's own.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode as AsyncErrorCode;
use wasmtime_wasi::p2::bindings::sync::filesystem::types as fs;
use wasmtime_wasi::p2::bindings::sync::io::streams;
use wasmtime_wasi::p2::{
    DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

/// Files and directories one scratch directory may hold.
pub const MAX_ENTRIES: usize = 256;
/// Where the directory appears to the guest.
pub const GUEST_PATH: &str = "/scratch";

/// The quota of one instance's scratch directory.
pub struct ScratchQuota {
    dir: cap_std::fs::Dir,
    limit: u64,
    /// Bytes this call may still write (shared with the file streams it opened).
    left: Arc<AtomicI64>,
    entries: usize,
}

impl ScratchQuota {
    pub fn open(path: &std::path::Path, limit: u64) -> std::io::Result<ScratchQuota> {
        let dir = cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        let mut quota = ScratchQuota {
            dir,
            limit,
            left: Arc::new(AtomicI64::new(0)),
            entries: 0,
        };
        quota.begin_call();
        Ok(quota)
    }

    /// Measure the directory: what it holds is what the call may not write any more.
    pub fn begin_call(&mut self) {
        let (bytes, entries) = measure(&self.dir);
        self.entries = entries;
        let left = self.limit.saturating_sub(bytes).min(i64::MAX as u64) as i64;
        self.left.store(left, Relaxed);
    }

    fn take(&self, bytes: u64) -> bool {
        take(&self.left, bytes)
    }
}

fn take(left: &AtomicI64, bytes: u64) -> bool {
    let bytes = bytes.min(i64::MAX as u64) as i64;
    left.fetch_update(Relaxed, Relaxed, |l| (l >= bytes).then_some(l - bytes))
        .is_ok()
}

/// Bytes and entries under `dir` (at most a little past `MAX_ENTRIES` of them are looked at:
/// beyond that nothing more may be created anyway).
fn measure(dir: &cap_std::fs::Dir) -> (u64, usize) {
    let mut bytes = 0u64;
    let mut entries = 0usize;
    let mut pending = vec![dir.try_clone()];
    while let Some(Ok(d)) = pending.pop() {
        let Ok(list) = d.entries() else { continue };
        for entry in list.flatten() {
            entries += 1;
            if entries > MAX_ENTRIES * 2 {
                return (bytes, entries);
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(entry.open_dir()),
                Ok(_) => bytes += entry.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    (bytes, entries)
}

fn no_space() -> wasmtime_wasi::p2::FsError {
    AsyncErrorCode::InsufficientSpace.into()
}

/// `wasi:filesystem/types`, as the linker provides it: wasmtime-wasi's, with the quota.
pub(crate) struct ScratchFs;

impl HasData for ScratchFs {
    type Data<'a> = ScratchView<'a>;
}

pub(crate) struct ScratchView<'a> {
    pub inner: WasiFilesystemCtxView<'a>,
    pub quota: Option<&'a mut ScratchQuota>,
}

impl ScratchView<'_> {
    fn take(&self, bytes: u64) -> FsResult<()> {
        match &self.quota {
            Some(q) if !q.take(bytes) => Err(no_space()),
            _ => Ok(()),
        }
    }

    fn add_entry(&mut self) -> FsResult<()> {
        if let Some(q) = &mut self.quota {
            if q.entries >= MAX_ENTRIES {
                return Err(no_space());
            }
            q.entries += 1;
        }
        Ok(())
    }

    /// Wrap a file stream so what it writes is taken from the quota.
    fn counted(
        &mut self,
        stream: Resource<streams::OutputStream>,
    ) -> FsResult<Resource<streams::OutputStream>> {
        let Some(q) = &self.quota else {
            return Ok(stream);
        };
        let left = q.left.clone();
        let inner: DynOutputStream = self.inner.table.delete(stream)?;
        let wrapped: DynOutputStream = Box::new(CountedStream { inner, left });
        Ok(self.inner.table.push(wrapped)?)
    }
}

fn borrow(fd: &Resource<fs::Descriptor>) -> Resource<fs::Descriptor> {
    Resource::new_borrow(fd.rep())
}

impl fs::Host for ScratchView<'_> {
    fn convert_error_code(
        &mut self,
        err: wasmtime_wasi::p2::FsError,
    ) -> wasmtime::Result<fs::ErrorCode> {
        fs::Host::convert_error_code(&mut self.inner, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<streams::Error>,
    ) -> wasmtime::Result<Option<fs::ErrorCode>> {
        fs::Host::filesystem_error_code(&mut self.inner, err)
    }
}

impl fs::HostDescriptor for ScratchView<'_> {
    fn advise(
        &mut self,
        fd: Resource<fs::Descriptor>,
        offset: fs::Filesize,
        len: fs::Filesize,
        advice: fs::Advice,
    ) -> FsResult<()> {
        fs::HostDescriptor::advise(&mut self.inner, fd, offset, len, advice)
    }

    fn sync_data(&mut self, fd: Resource<fs::Descriptor>) -> FsResult<()> {
        fs::HostDescriptor::sync_data(&mut self.inner, fd)
    }

    fn get_flags(&mut self, fd: Resource<fs::Descriptor>) -> FsResult<fs::DescriptorFlags> {
        fs::HostDescriptor::get_flags(&mut self.inner, fd)
    }

    fn get_type(&mut self, fd: Resource<fs::Descriptor>) -> FsResult<fs::DescriptorType> {
        fs::HostDescriptor::get_type(&mut self.inner, fd)
    }

    fn set_size(&mut self, fd: Resource<fs::Descriptor>, size: fs::Filesize) -> FsResult<()> {
        let current = fs::HostDescriptor::stat(&mut self.inner, borrow(&fd))?.size;
        self.take(size.saturating_sub(current))?;
        fs::HostDescriptor::set_size(&mut self.inner, fd, size)
    }

    fn set_times(
        &mut self,
        fd: Resource<fs::Descriptor>,
        atim: fs::NewTimestamp,
        mtim: fs::NewTimestamp,
    ) -> FsResult<()> {
        fs::HostDescriptor::set_times(&mut self.inner, fd, atim, mtim)
    }

    fn read(
        &mut self,
        fd: Resource<fs::Descriptor>,
        len: fs::Filesize,
        offset: fs::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        fs::HostDescriptor::read(&mut self.inner, fd, len, offset)
    }

    fn write(
        &mut self,
        fd: Resource<fs::Descriptor>,
        buf: Vec<u8>,
        offset: fs::Filesize,
    ) -> FsResult<fs::Filesize> {
        // A write past the end grows the file by the gap too (sparse or not, it is size).
        let size = fs::HostDescriptor::stat(&mut self.inner, borrow(&fd))?.size;
        let len = buf.len() as u64;
        self.take(len.max(offset.saturating_add(len).saturating_sub(size)))?;
        fs::HostDescriptor::write(&mut self.inner, fd, buf, offset)
    }

    fn read_directory(
        &mut self,
        fd: Resource<fs::Descriptor>,
    ) -> FsResult<Resource<fs::DirectoryEntryStream>> {
        fs::HostDescriptor::read_directory(&mut self.inner, fd)
    }

    fn sync(&mut self, fd: Resource<fs::Descriptor>) -> FsResult<()> {
        fs::HostDescriptor::sync(&mut self.inner, fd)
    }

    fn create_directory_at(&mut self, fd: Resource<fs::Descriptor>, path: String) -> FsResult<()> {
        self.add_entry()?;
        fs::HostDescriptor::create_directory_at(&mut self.inner, fd, path)
    }

    fn stat(&mut self, fd: Resource<fs::Descriptor>) -> FsResult<fs::DescriptorStat> {
        fs::HostDescriptor::stat(&mut self.inner, fd)
    }

    fn stat_at(
        &mut self,
        fd: Resource<fs::Descriptor>,
        path_flags: fs::PathFlags,
        path: String,
    ) -> FsResult<fs::DescriptorStat> {
        fs::HostDescriptor::stat_at(&mut self.inner, fd, path_flags, path)
    }

    fn set_times_at(
        &mut self,
        fd: Resource<fs::Descriptor>,
        path_flags: fs::PathFlags,
        path: String,
        atim: fs::NewTimestamp,
        mtim: fs::NewTimestamp,
    ) -> FsResult<()> {
        fs::HostDescriptor::set_times_at(&mut self.inner, fd, path_flags, path, atim, mtim)
    }

    fn link_at(
        &mut self,
        _fd: Resource<fs::Descriptor>,
        _old_path_flags: fs::PathFlags,
        _old_path: String,
        _new_descriptor: Resource<fs::Descriptor>,
        _new_path: String,
    ) -> FsResult<()> {
        Err(AsyncErrorCode::NotPermitted.into())
    }

    fn open_at(
        &mut self,
        fd: Resource<fs::Descriptor>,
        path_flags: fs::PathFlags,
        path: String,
        oflags: fs::OpenFlags,
        flags: fs::DescriptorFlags,
    ) -> FsResult<Resource<fs::Descriptor>> {
        if oflags.contains(fs::OpenFlags::CREATE) {
            let exists =
                fs::HostDescriptor::stat_at(&mut self.inner, borrow(&fd), path_flags, path.clone())
                    .is_ok();
            if !exists {
                self.add_entry()?;
            }
        }
        fs::HostDescriptor::open_at(&mut self.inner, fd, path_flags, path, oflags, flags)
    }

    fn drop(&mut self, fd: Resource<fs::Descriptor>) -> wasmtime::Result<()> {
        fs::HostDescriptor::drop(&mut self.inner, fd)
    }

    fn readlink_at(&mut self, fd: Resource<fs::Descriptor>, path: String) -> FsResult<String> {
        fs::HostDescriptor::readlink_at(&mut self.inner, fd, path)
    }

    fn remove_directory_at(&mut self, fd: Resource<fs::Descriptor>, path: String) -> FsResult<()> {
        fs::HostDescriptor::remove_directory_at(&mut self.inner, fd, path)
    }

    fn rename_at(
        &mut self,
        fd: Resource<fs::Descriptor>,
        old_path: String,
        new_fd: Resource<fs::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        fs::HostDescriptor::rename_at(&mut self.inner, fd, old_path, new_fd, new_path)
    }

    fn symlink_at(
        &mut self,
        _fd: Resource<fs::Descriptor>,
        _src_path: String,
        _dest_path: String,
    ) -> FsResult<()> {
        Err(AsyncErrorCode::NotPermitted.into())
    }

    fn unlink_file_at(&mut self, fd: Resource<fs::Descriptor>, path: String) -> FsResult<()> {
        fs::HostDescriptor::unlink_file_at(&mut self.inner, fd, path)
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<fs::Descriptor>,
        offset: fs::Filesize,
    ) -> FsResult<Resource<streams::InputStream>> {
        fs::HostDescriptor::read_via_stream(&mut self.inner, fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<fs::Descriptor>,
        offset: fs::Filesize,
    ) -> FsResult<Resource<streams::OutputStream>> {
        // A stream that starts past the end grows the file by the gap.
        let size = fs::HostDescriptor::stat(&mut self.inner, borrow(&fd))?.size;
        self.take(offset.saturating_sub(size))?;
        let stream = fs::HostDescriptor::write_via_stream(&mut self.inner, fd, offset)?;
        self.counted(stream)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<fs::Descriptor>,
    ) -> FsResult<Resource<streams::OutputStream>> {
        let stream = fs::HostDescriptor::append_via_stream(&mut self.inner, fd)?;
        self.counted(stream)
    }

    fn is_same_object(
        &mut self,
        a: Resource<fs::Descriptor>,
        b: Resource<fs::Descriptor>,
    ) -> wasmtime::Result<bool> {
        fs::HostDescriptor::is_same_object(&mut self.inner, a, b)
    }

    fn metadata_hash(&mut self, fd: Resource<fs::Descriptor>) -> FsResult<fs::MetadataHashValue> {
        fs::HostDescriptor::metadata_hash(&mut self.inner, fd)
    }

    fn metadata_hash_at(
        &mut self,
        fd: Resource<fs::Descriptor>,
        path_flags: fs::PathFlags,
        path: String,
    ) -> FsResult<fs::MetadataHashValue> {
        fs::HostDescriptor::metadata_hash_at(&mut self.inner, fd, path_flags, path)
    }
}

impl fs::HostDirectoryEntryStream for ScratchView<'_> {
    fn read_directory_entry(
        &mut self,
        stream: Resource<fs::DirectoryEntryStream>,
    ) -> FsResult<Option<fs::DirectoryEntry>> {
        fs::HostDirectoryEntryStream::read_directory_entry(&mut self.inner, stream)
    }

    fn drop(&mut self, stream: Resource<fs::DirectoryEntryStream>) -> wasmtime::Result<()> {
        fs::HostDirectoryEntryStream::drop(&mut self.inner, stream)
    }
}

/// A file's output stream whose writes are taken from the scratch quota.
struct CountedStream {
    inner: DynOutputStream,
    left: Arc<AtomicI64>,
}

fn full() -> StreamError {
    StreamError::LastOperationFailed(wasmtime::Error::new(std::io::Error::from_raw_os_error(
        libc::ENOSPC,
    )))
}

#[wasmtime_wasi::async_trait]
impl Pollable for CountedStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CountedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !take(&self.left, bytes.len() as u64) {
            return Err(full());
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let left = self.left.load(Relaxed);
        if left <= 0 {
            return Err(full());
        }
        Ok(self.inner.check_write()?.min(left as usize))
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

//! Output files, with their blocks allocated ahead of the writes where
//! that is cheaper than allocating them as the writes come.

use std::fs::File;
use std::io::{self, Write};

/// How far ahead of the writes an output file's blocks are allocated: each
/// step is one `fallocate`, and an output keeps at most this much allocated
/// past its end until it is flushed (or, if the replay is killed, until
/// the file is rewritten or deleted). An output is allocated ahead only
/// once it has grown past a step, so that a small one costs no
/// `fallocate` and no freeing of blocks (with a discard, on a file system
/// mounted with `discard`).
const PREALLOCATE_STEP: u64 = 4 << 20;

/// A capture output: a file written from its start. On ext4 its blocks are
/// allocated a few MiB ahead of the writes (`fallocate` keeping the size):
/// a write then finds its blocks there, where delayed allocation would
/// reserve them one 4 KiB block at a time, which costs the kernel more than
/// copying the data. [`OutputFile::flush`] frees the blocks past the end.
pub struct OutputFile {
    file: File,
    /// Bytes written.
    len: u64,
    /// Where the blocks allocated ahead end.
    allocated: u64,
    /// Whether to allocate ahead: on ext4 only, as elsewhere it was not
    /// measured to help, and tmpfs keeps what is allocated past the end
    /// of a file even through the flush.
    preallocate: bool,
}

impl OutputFile {
    /// Takes a file just created (or truncated), to be written from its
    /// start.
    pub fn new(file: File) -> OutputFile {
        let preallocate = is_ext4(&file);
        OutputFile { file, len: 0, allocated: 0, preallocate }
    }

    #[cfg(target_os = "linux")]
    fn allocate_ahead(&mut self, end: u64) {
        use std::os::fd::AsRawFd;
        let from = self.allocated.max(self.len);
        let to = end.next_multiple_of(PREALLOCATE_STEP);
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(to - from)) else {
            self.preallocate = false;
            return;
        };
        // SAFETY: fallocate takes the file's descriptor, open for writing
        // as long as `self.file` lives, and no memory.
        let status = unsafe { libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
        // Without the blocks (a full disk, a quota) the writes allocate
        // their own, and report the error if there is one.
        if status == 0 {
            self.allocated = to;
        } else {
            self.preallocate = false;
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn allocate_ahead(&mut self, _end: u64) {}
}

impl Write for OutputFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let end = self.len + bytes.len() as u64;
        if self.preallocate && end > self.allocated && self.len >= PREALLOCATE_STEP {
            self.allocate_ahead(end);
        }
        let written = self.file.write(bytes)?;
        self.len += written as u64;
        Ok(written)
    }

    /// Also frees the blocks allocated past the end, by setting the file's
    /// length to what it is: ext4 then drops the blocks past it.
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.allocated > self.len {
            let len = self.file.metadata()?.len();
            self.file.set_len(len)?;
            self.allocated = len;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn is_ext4(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs writes a whole `statfs` to the pointer, which points
    // to room for one, and reads no other memory.
    if unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstatfs returned 0, so it filled in the struct.
    let stat = unsafe { stat.assume_init() };
    stat.f_type == libc::EXT4_SUPER_MAGIC
}

#[cfg(not(target_os = "linux"))]
fn is_ext4(_file: &File) -> bool {
    false
}

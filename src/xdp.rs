//! An XDP run as the kernel lays it out: the buffer a program runs over
//! (the context block r1 points to, then the packet's page: headroom, the
//! packet, tailroom up to where the kernel keeps `skb_shared_info`), the
//! geometry the `bpf_xdp_adjust_*` helpers check, and the actions. Both
//! engines run over the whole buffer, with the page after the block as the
//! program's input ([`crate::memory::accessible_input`]), so every packet
//! access stays checked against the page. The C API runs over a caller's
//! buffer of the same shape (the block, then headroom, packet and
//! tailroom), whose end is the page's.

use crate::image::xdp_context;

/// `XDP_PACKET_HEADROOM`: bytes before the packet in its page.
pub const HEADROOM: usize = 256;
/// Bytes at the start of the headroom the kernel keeps for `struct
/// xdp_frame`: neither head nor metadata may grow into them.
pub const FRAME_RESERVED: usize = 40;
/// The page the packet lives in, less `skb_shared_info` at its end: the
/// furthest `data_end` may reach, from the start of the headroom.
pub const HARD_END: usize = 4096 - 320;
/// The longest frame that fits one buffer; a longer one would be
/// multi-buffer.
pub const MAX_LINEAR: usize = HARD_END - HEADROOM;
/// `ETH_HLEN`: no packet gets shorter, and test_run refuses shorter frames.
pub const ETH_HLEN: usize = 14;
/// Bytes of a run's input: the context block, then the page.
pub const INPUT_LEN: usize = xdp_context::SIZE + HARD_END;

/// What an XDP program asks for its packet (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Action {
    pub const ALL: [Action; 5] = [Action::Aborted, Action::Drop, Action::Pass, Action::Tx, Action::Redirect];

    /// The action a return value names, if any.
    pub fn from_retval(retval: u64) -> Option<Action> {
        Action::ALL.into_iter().find(|action| *action as u64 == retval)
    }

    /// What the kernel does with a return value on a real device: any value
    /// past XDP_REDIRECT is warned about (`bpf_warn_invalid_xdp_action`)
    /// and handled as XDP_ABORTED.
    pub fn verdict(retval: u64) -> Action {
        Action::from_retval(retval).unwrap_or(Action::Aborted)
    }

    /// The kernel's name: `XDP_PASS`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Aborted => "XDP_ABORTED",
            Action::Drop => "XDP_DROP",
            Action::Pass => "XDP_PASS",
            Action::Tx => "XDP_TX",
            Action::Redirect => "XDP_REDIRECT",
        }
    }
}

/// Where a packet came in, as `struct xdp_md` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxInfo {
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
}

impl Default for RxInfo {
    /// The loopback's first queue, which test_run gives a run without a
    /// device.
    fn default() -> RxInfo {
        RxInfo { ingress_ifindex: 1, rx_queue_index: 0 }
    }
}

/// Why a packet cannot be run, as test_run refuses it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BufferError {
    #[error("a frame of {0} bytes is shorter than an Ethernet header (14 bytes)")]
    TooShort(usize),
    #[error("{0} bytes of metadata: not a multiple of 4, or more than the headroom's 216")]
    BadMetadata(usize),
    #[error("a frame of {0} bytes needs a multi-buffer XDP packet (more than 3520 bytes), which is not supported")]
    MultiBuffer(usize),
}

/// The packet's page of one run, with the context block before it, kept
/// 8-byte aligned.
pub struct Buffer {
    words: Box<[u64]>,
    /// From the start of the headroom.
    data_meta: usize,
    data: usize,
    data_end: usize,
    rx: RxInfo,
    /// Did the last run leave the context block's pointers outside the
    /// page? No store of the program reaches the block and the helpers
    /// keep it sound, so only an engine's fault could: the buffer does not
    /// trust what it reads back.
    corrupt: bool,
}

impl Buffer {
    /// A packet `frame` with `meta` bytes of metadata before it, placed as
    /// test_run places them: the frame right after the headroom, the
    /// metadata at the headroom's end.
    pub fn new(frame: &[u8], meta: &[u8], rx: RxInfo) -> Result<Buffer, BufferError> {
        let mut buffer = Buffer {
            words: vec![0; INPUT_LEN.div_ceil(8)].into_boxed_slice(),
            data_meta: HEADROOM,
            data: HEADROOM,
            data_end: HEADROOM,
            rx,
            corrupt: false,
        };
        buffer.load(frame, meta, rx)?;
        Ok(buffer)
    }

    /// Places another packet in this buffer, as [`Buffer::new`] would in a
    /// new one, without allocating; on an error the buffer is unchanged.
    /// The page is zeroed as far as the last packet reached (the headroom,
    /// and the bytes past the new frame that the last one, or its run, left
    /// within `data_end`), as test_run's fresh buffer is: what a program
    /// reaches with the helpers. Bytes a program reaches only in ways the
    /// kernel's verifier refuses (past `data_end` without growing the
    /// tail, which zeroes what it grows) are not reset.
    pub fn load(&mut self, frame: &[u8], meta: &[u8], rx: RxInfo) -> Result<(), BufferError> {
        if frame.len() < ETH_HLEN {
            return Err(BufferError::TooShort(frame.len()));
        }
        if meta.len() % 4 != 0 || meta.len() > HEADROOM - FRAME_RESERVED {
            return Err(BufferError::BadMetadata(meta.len()));
        }
        if frame.len() > MAX_LINEAR {
            return Err(BufferError::MultiBuffer(frame.len()));
        }
        let reached = self.data_end.max(HEADROOM);
        let (meta_start, end) = (HEADROOM - meta.len(), HEADROOM + frame.len());
        let page = self.page_mut();
        page[..meta_start].fill(0);
        page[meta_start..HEADROOM].copy_from_slice(meta);
        page[HEADROOM..end].copy_from_slice(frame);
        if reached > end {
            page[end..reached].fill(0);
        }
        (self.data_meta, self.data, self.data_end, self.rx, self.corrupt) = (meta_start, HEADROOM, end, rx, false);
        Ok(())
    }

    /// The context block a run starts from.
    pub(crate) fn context(&self) -> Context {
        Context { rx: self.rx, data_meta: self.data_meta, data: self.data, data_end: self.data_end }
    }

    /// The input of a run, its context block not yet written.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the words are INPUT_LEN bytes or more, any byte pattern is
        // a valid u8, and the borrow of `self` covers the slice's life.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), INPUT_LEN) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, with the exclusive borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), INPUT_LEN) }
    }

    fn page_mut(&mut self) -> &mut [u8] {
        &mut self.bytes_mut()[xdp_context::SIZE..]
    }

    /// Runs `engine` over the buffer (r1 = the context block) and returns
    /// what it returned, with the packet as the program left it. A run that
    /// leaves the block's packet pointers outside the page returns
    /// XDP_ABORTED.
    pub fn run<E>(&mut self, engine: impl FnOnce(&mut [u8]) -> Result<u64, E>) -> Result<u64, E> {
        let context = self.context();
        let bytes = self.bytes_mut();
        context.write(bytes);
        let retval = engine(bytes)?;
        let Some(left) = Context::read(self.bytes()) else {
            self.corrupt = true;
            return Ok(Action::Aborted as u64);
        };
        self.corrupt = false;
        (self.data_meta, self.data, self.data_end) = (left.data_meta, left.data, left.data_end);
        Ok(retval)
    }

    /// The packet, from `data` to `data_end`.
    pub fn packet(&self) -> &[u8] {
        &self.bytes()[xdp_context::SIZE + self.data..xdp_context::SIZE + self.data_end]
    }

    /// The metadata, from `data_meta` to `data`.
    pub fn metadata(&self) -> &[u8] {
        &self.bytes()[xdp_context::SIZE + self.data_meta..xdp_context::SIZE + self.data]
    }

    /// Metadata and packet, as test_run returns them in `data_out`.
    pub fn data_out(&self) -> &[u8] {
        &self.bytes()[xdp_context::SIZE + self.data_meta..xdp_context::SIZE + self.data_end]
    }

    /// The ifindex the last run's `bpf_redirect` named, or the devmap
    /// entry its `bpf_redirect_map` found, if any.
    pub fn redirect_target(&self) -> Option<u32> {
        self.recorded_target(xdp_context::REDIRECT_DEVICE)
    }

    /// The CPU the last run's `bpf_redirect_map` found in a cpumap, if any.
    pub fn redirect_cpu(&self) -> Option<u32> {
        self.recorded_target(xdp_context::REDIRECT_CPU)
    }

    fn recorded_target(&self, kind: u32) -> Option<u32> {
        let (recorded, target) = Context::redirect(self.bytes());
        (!self.corrupt && recorded == kind).then_some(target)
    }

    pub fn rx(&self) -> RxInfo {
        self.rx
    }
}

/// What a run's context block says: where the packet came in, and its
/// pointers as offsets from the start of the headroom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Context {
    pub(crate) rx: RxInfo,
    pub(crate) data_meta: usize,
    pub(crate) data: usize,
    pub(crate) data_end: usize,
}

impl Context {
    /// Writes the context block at the start of `bytes`, a run's input, with
    /// pointers into the page that follows it there.
    pub(crate) fn write(&self, bytes: &mut [u8]) {
        let page = bytes.as_ptr() as u64 + xdp_context::SIZE as u64;
        bytes[..xdp_context::SIZE].fill(0);
        let mut put = |off: i16, value: &[u8]| {
            bytes[off as usize..off as usize + value.len()].copy_from_slice(value);
        };
        put(xdp_context::MD_INGRESS_IFINDEX, &self.rx.ingress_ifindex.to_ne_bytes());
        put(xdp_context::MD_RX_QUEUE_INDEX, &self.rx.rx_queue_index.to_ne_bytes());
        put(xdp_context::DATA, &(page + self.data as u64).to_ne_bytes());
        put(xdp_context::DATA_END, &(page + self.data_end as u64).to_ne_bytes());
        put(xdp_context::DATA_META, &(page + self.data_meta as u64).to_ne_bytes());
    }

    /// The context a run left in the block at the start of `bytes`, its
    /// input, when its pointers are [`valid`] for the page that follows
    /// (which ends where `bytes` ends).
    pub(crate) fn read(bytes: &[u8]) -> Option<Context> {
        let hard_end = bytes.len().checked_sub(xdp_context::SIZE)?;
        let page = bytes.as_ptr() as u64 + xdp_context::SIZE as u64;
        let word = |off: usize| u32::from_ne_bytes(bytes[off..off + 4].try_into().expect("4 bytes"));
        let pointer = |off: i16| {
            let field = &bytes[off as usize..off as usize + 8];
            u64::from_ne_bytes(field.try_into().expect("8 bytes")).wrapping_sub(page)
        };
        let (data_meta, data, data_end) =
            (pointer(xdp_context::DATA_META), pointer(xdp_context::DATA), pointer(xdp_context::DATA_END));
        valid(data_meta, data, data_end, hard_end as u64).then(|| Context {
            rx: RxInfo {
                ingress_ifindex: word(xdp_context::MD_INGRESS_IFINDEX as usize),
                rx_queue_index: word(xdp_context::MD_RX_QUEUE_INDEX as usize),
            },
            data_meta: data_meta as usize,
            data: data as usize,
            data_end: data_end as usize,
        })
    }

    /// The redirect target the run recorded in the block at the start of
    /// `bytes`: what it is (`REDIRECT_DEVICE`, `REDIRECT_CPU`, 0 for none)
    /// and its number.
    pub(crate) fn redirect(bytes: &[u8]) -> (u32, u32) {
        let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        (word(xdp_context::REDIRECT_SET), word(xdp_context::REDIRECT_TARGET))
    }
}

/// Are these packet pointers (from the start of the headroom) inside a
/// page whose packet may reach `hard_end`, in order, clear of the bytes
/// kept for `struct xdp_frame`?
pub fn valid(data_meta: u64, data: u64, data_end: u64, hard_end: u64) -> bool {
    FRAME_RESERVED as u64 <= data_meta && data_meta <= data && data <= data_end && data_end <= hard_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_the_packet_after_the_headroom() {
        let frame: Vec<u8> = (0..20).collect();
        let mut buffer = Buffer::new(&frame, &[9; 4], RxInfo::default()).unwrap();
        let retval = buffer
            .run(|input| {
                assert_eq!(input.len(), INPUT_LEN);
                let word = |off: i16| u64::from_ne_bytes(input[off as usize..off as usize + 8].try_into().unwrap());
                let start = input.as_ptr() as u64;
                assert_eq!(word(xdp_context::DATA) - start, (xdp_context::SIZE + HEADROOM) as u64);
                assert_eq!(word(xdp_context::DATA) - word(xdp_context::DATA_META), 4);
                assert_eq!(word(xdp_context::DATA_END) - word(xdp_context::DATA), 20);
                Ok::<u64, ()>(2)
            })
            .unwrap();
        assert_eq!(retval, 2);
        assert_eq!(buffer.packet(), &frame[..]);
        assert_eq!(buffer.metadata(), &[9; 4]);
        assert_eq!(buffer.redirect_target(), None);
    }

    #[test]
    fn a_reused_buffer_looks_new_to_the_helpers() {
        // A run that grew the head into the headroom and the tail, and
        // wrote there, then a shorter packet: what it can reach by growing
        // head or tail again is as in a new buffer.
        let mut buffer = Buffer::new(&[1; 100], &[], RxInfo::default()).unwrap();
        buffer
            .run(|input| {
                let page = input.as_ptr() as u64 + xdp_context::SIZE as u64;
                input[xdp_context::SIZE + FRAME_RESERVED..xdp_context::SIZE + HEADROOM + 200].fill(9);
                input[xdp_context::DATA as usize..][..8].copy_from_slice(&(page + FRAME_RESERVED as u64).to_ne_bytes());
                input[xdp_context::DATA_META as usize..][..8]
                    .copy_from_slice(&(page + FRAME_RESERVED as u64).to_ne_bytes());
                input[xdp_context::DATA_END as usize..][..8]
                    .copy_from_slice(&(page + HEADROOM as u64 + 200).to_ne_bytes());
                Ok::<u64, ()>(2)
            })
            .unwrap();
        assert_eq!(buffer.packet().len(), 200 + HEADROOM - FRAME_RESERVED);
        buffer.load(&[3; 20], &[5; 8], RxInfo { ingress_ifindex: 2, rx_queue_index: 1 }).unwrap();
        let fresh = Buffer::new(&[3; 20], &[5; 8], RxInfo { ingress_ifindex: 2, rx_queue_index: 1 }).unwrap();
        assert_eq!(buffer.bytes()[xdp_context::SIZE..], fresh.bytes()[xdp_context::SIZE..]);
        assert_eq!((buffer.packet(), buffer.metadata(), buffer.rx()), (fresh.packet(), fresh.metadata(), fresh.rx()));
        assert_eq!(buffer.load(&[0; 4000], &[], RxInfo::default()), Err(BufferError::MultiBuffer(4000)));
        assert_eq!(buffer.packet(), &[3; 20], "a refused packet leaves the buffer as it was");
    }

    #[test]
    fn refuses_what_test_run_refuses() {
        assert_eq!(Buffer::new(&[0; 10], &[], RxInfo::default()).err(), Some(BufferError::TooShort(10)));
        assert_eq!(Buffer::new(&[0; 14], &[0; 6], RxInfo::default()).err(), Some(BufferError::BadMetadata(6)));
        assert_eq!(Buffer::new(&[0; 4000], &[], RxInfo::default()).err(), Some(BufferError::MultiBuffer(4000)));
    }

    #[test]
    fn a_run_that_breaks_the_pointers_is_aborted() {
        let mut buffer = Buffer::new(&[0; 14], &[], RxInfo::default()).unwrap();
        let retval = buffer.run(|input| {
            input[xdp_context::DATA as usize..][..8].fill(0xff);
            Ok::<u64, ()>(2)
        });
        assert_eq!(retval, Ok(0));
        assert_eq!(buffer.packet().len(), 14);
    }

    #[test]
    fn unknown_actions_are_aborted_as_verdicts() {
        assert_eq!(Action::verdict(2), Action::Pass);
        assert_eq!(Action::verdict(7), Action::Aborted);
        assert_eq!(Action::from_retval(7), None);
    }
}

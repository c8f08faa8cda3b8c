//! Link layers: which bytes of a captured frame the program sees.
//!
//! With ip-mode on, as in QEMU's `filter-ubpf`, the program sees an IPv4
//! packet from its header to the end of the captured bytes; a frame that
//! carries no IPv4 bypasses the program. With ip-mode off it sees the whole
//! frame, whatever the link type.

use etherparse::EtherType;
use pcap_file::DataLink;

/// Link types (the numbers of pcap headers and pcapng interfaces).
pub mod link_type {
    pub const ETHERNET: u32 = 1;
    /// DLT_RAW as most systems number it, and as some pcap files hold it.
    pub const DLT_RAW: u32 = 12;
    /// DLT_RAW as OpenBSD numbers it.
    pub const DLT_RAW_OPENBSD: u32 = 14;
    pub const RAW: u32 = 101;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

/// Every link type ip-mode on understands.
pub const SUPPORTED_LINK_TYPES: &str = "ETHERNET (1), RAW (101, and DLT_RAW 12 and 14), LINUX_SLL (113), \
     IPV4 (228), IPV6 (229), LINUX_SLL2 (276)";

/// Tag protocol identifiers that libpcap's `vlan` accepts: 802.1Q, 802.1ad
/// and the older QinQ value. One tag is skipped, whichever it is, as QEMU's
/// filter-ubpf does (`filter_ubpf_ipv4_offset` in qemu-patches/).
const VLAN_TPIDS: [EtherType; 3] =
    [EtherType::VLAN_TAGGED_FRAME, EtherType::PROVIDER_BRIDGING, EtherType::VLAN_DOUBLE_TAGGED_FRAME];

/// Where an Ethernet frame's EtherType lies, and where a VLAN tag's.
const ETHER_TYPE_AT: usize = 12;
const VLAN_ETHER_TYPE_AT: usize = 16;
const SLL_HEADER_LEN: usize = 16;
const SLL_PROTOCOL_AT: usize = 14;
const SLL2_HEADER_LEN: usize = 20;
const SLL2_PROTOCOL_AT: usize = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpMode {
    /// The program sees IPv4 packets from their header on; other frames pass
    /// without running it.
    On,
    /// The program sees every frame whole, link-layer header included.
    Off,
}

/// A link type that ip-mode on cannot find IPv4 in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("link type {} is not supported with ip-mode on (supported: {SUPPORTED_LINK_TYPES}); \
         --ip-mode off gives the program whole frames of any link type", link_type_name(*.0))]
pub struct UnsupportedLinkType(pub u32);

/// A link type's number and name, for messages: "1 (ETHERNET)".
pub fn link_type_name(link_type: u32) -> String {
    match link_type {
        link_type::DLT_RAW | link_type::DLT_RAW_OPENBSD => format!("{link_type} (DLT_RAW)"),
        _ => match DataLink::from(link_type) {
            DataLink::Unknown(_) => format!("{link_type} (unknown)"),
            known => format!("{link_type} ({known:?})"),
        },
    }
}

/// The bytes of `frame` the program runs on, or `None` when the frame
/// bypasses it (ip-mode on and no IPv4 in the frame). Inlined, as a replay
/// calls it for every packet.
#[inline]
pub fn program_input(mode: IpMode, link_type: u32, frame: &[u8]) -> Result<Option<&[u8]>, UnsupportedLinkType> {
    if mode == IpMode::Off {
        return Ok(Some(frame));
    }
    Ok(match link_type {
        link_type::ETHERNET => ethernet_ipv4(frame),
        link_type::RAW | link_type::DLT_RAW | link_type::DLT_RAW_OPENBSD => {
            frame.first().filter(|&&byte| byte >> 4 == 4).map(|_| frame)
        }
        link_type::IPV4 => Some(frame),
        link_type::IPV6 => None,
        link_type::LINUX_SLL => cooked_ipv4(frame, SLL_PROTOCOL_AT, SLL_HEADER_LEN),
        link_type::LINUX_SLL2 => cooked_ipv4(frame, SLL2_PROTOCOL_AT, SLL2_HEADER_LEN),
        other => return Err(UnsupportedLinkType(other)),
    })
}

/// The IPv4 packet of an Ethernet frame, after at most one VLAN tag. Read
/// by hand, so that it inlines into a replay's loop: etherparse's slices
/// are calls into another crate for every packet.
#[inline]
fn ethernet_ipv4(frame: &[u8]) -> Option<&[u8]> {
    let (ether_type, payload_at) = match ether_type_at(frame, ETHER_TYPE_AT)? {
        tpid if VLAN_TPIDS.contains(&tpid) => (ether_type_at(frame, VLAN_ETHER_TYPE_AT)?, VLAN_ETHER_TYPE_AT + 2),
        ether_type => (ether_type, ETHER_TYPE_AT + 2),
    };
    if ether_type == EtherType::IPV4 { frame.get(payload_at..) } else { None }
}

#[inline]
fn ether_type_at(frame: &[u8], at: usize) -> Option<EtherType> {
    let bytes = frame.get(at..at + 2)?;
    Some(EtherType(u16::from_be_bytes([bytes[0], bytes[1]])))
}

/// The IPv4 packet of a Linux cooked capture frame. The protocol field is
/// read whatever the hardware type, as libpcap does: etherparse's SLL parser
/// refuses the loopback and tunnel devices that `tcpdump -i any` records.
#[inline]
fn cooked_ipv4(frame: &[u8], protocol_at: usize, header_len: usize) -> Option<&[u8]> {
    let protocol = frame.get(protocol_at..protocol_at + 2)?;
    let payload = frame.get(header_len..)?;
    (u16::from_be_bytes([protocol[0], protocol[1]]) == u16::from(EtherType::IPV4)).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ethernet(ether_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0xaa; 12];
        frame.extend(ether_type.to_be_bytes());
        frame.extend(payload);
        frame
    }

    const IP: &[u8] = &[0x45, 0, 0, 20];

    #[test]
    fn ethernet_and_one_vlan_tag_are_skipped() {
        let frame = ethernet(0x0800, IP);
        assert_eq!(program_input(IpMode::On, link_type::ETHERNET, &frame), Ok(Some(IP)));
        for tpid in [0x8100, 0x88a8, 0x9100] {
            let mut tagged = vec![0x00, 0x05, 0x08, 0x00];
            tagged.extend(IP);
            assert_eq!(program_input(IpMode::On, link_type::ETHERNET, &ethernet(tpid, &tagged)), Ok(Some(IP)));
        }
        let double = ethernet(0x88a8, &[0, 5, 0x81, 0, 0, 6, 0x08, 0]);
        assert_eq!(program_input(IpMode::On, link_type::ETHERNET, &double), Ok(None));
        assert_eq!(program_input(IpMode::On, link_type::ETHERNET, &ethernet(0x86dd, IP)), Ok(None));
        assert_eq!(program_input(IpMode::On, link_type::ETHERNET, &frame[..13]), Ok(None));
        assert_eq!(program_input(IpMode::On, link_type::ETHERNET, &ethernet(0x8100, &[0, 5, 8])), Ok(None));
        assert_eq!(program_input(IpMode::Off, link_type::ETHERNET, &frame), Ok(Some(&frame[..])));
    }

    #[test]
    fn a_cut_off_ipv4_header_still_runs_the_program() {
        let frame = ethernet(0x0800, &IP[..1]);
        assert_eq!(program_input(IpMode::On, link_type::ETHERNET, &frame), Ok(Some(&IP[..1])));
        assert_eq!(program_input(IpMode::On, link_type::ETHERNET, &frame[..14]), Ok(Some(&[][..])));
    }

    #[test]
    fn raw_ip_by_version() {
        for raw in [link_type::RAW, link_type::DLT_RAW, link_type::DLT_RAW_OPENBSD] {
            assert_eq!(program_input(IpMode::On, raw, IP), Ok(Some(IP)));
            assert_eq!(program_input(IpMode::On, raw, &[0x60, 0, 0, 0]), Ok(None));
            assert_eq!(program_input(IpMode::On, raw, &[]), Ok(None));
        }
        assert_eq!(program_input(IpMode::On, link_type::IPV4, IP), Ok(Some(IP)));
        assert_eq!(program_input(IpMode::On, link_type::IPV6, &[0x60]), Ok(None));
    }

    #[test]
    fn cooked_captures_name_the_protocol() {
        let mut sll = vec![0, 0, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend(IP);
        assert_eq!(program_input(IpMode::On, link_type::LINUX_SLL, &sll), Ok(Some(IP)));
        sll[14] = 0x86;
        assert_eq!(program_input(IpMode::On, link_type::LINUX_SLL, &sll), Ok(None));
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        sll2.extend(IP);
        assert_eq!(program_input(IpMode::On, link_type::LINUX_SLL2, &sll2), Ok(Some(IP)));
        assert_eq!(program_input(IpMode::On, link_type::LINUX_SLL2, &sll2[..10]), Ok(None));
    }

    #[test]
    fn other_link_types_are_named() {
        let error = program_input(IpMode::On, 147, IP).unwrap_err();
        assert!(error.to_string().starts_with("link type 147 (USER0) is not supported"), "{error}");
        assert_eq!(program_input(IpMode::Off, 147, IP), Ok(Some(IP)));
        assert_eq!(link_type_name(12), "12 (DLT_RAW)");
        assert_eq!(link_type_name(60000), "60000 (unknown)");
    }
}

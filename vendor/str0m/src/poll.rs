//! Readiness signalling threaded through the component tree.
//!
//! Everything below [`Rtc`][crate::Rtc] forms a tree, and both events and new
//! timeouts bubble up from the leaves. To avoid re-walking a quiescent tree on
//! every `poll_output`, each path that takes `&mut` access to a sub-component
//! is handed an armed [`Wake`] guard, threaded down like `&mut` state.
//!
//! A [`Wake`] defaults to re-polling *everything*: left untouched it signals
//! both a pending event drain and a timeout recompute. A component narrows it
//! locally — [`Wake::no_events`] / [`Wake::no_timeout`] — when it knows less
//! changed. The guard folds its (possibly narrowed) signal into the owning
//! [`Readiness`] on drop.
//!
//! The direction is deliberate: the safe default is to re-poll, and narrowing
//! is an opt-in optimization owned by the component that performed the
//! mutation. A forgotten narrowing or an over-broad wake costs at most one redundant
//! poll; it can never drop output. No component names another's scope, and
//! `Rtc` holds no knowledge of which mutation affects what.
//!
//! The app-facing API wrappers ([`DirectApi`][crate::change::DirectApi],
//! [`SdpApi`][crate::change::SdpApi], [`Channel`][crate::channel::Channel],
//! [`Bwe`][crate::bwe::Bwe]) hold an [`RtcMut`] instead of `&mut Rtc`. It arms
//! the readiness on *mutable* deref only, so a `&mut self` method that mutates
//! re-polls the tree while a `&self` reader never does — and neither has to
//! remember to call anything.

use std::ops::{Deref, DerefMut};

use crate::Rtc;

/// A `&mut Rtc` handle that re-polls the tree when it is used mutably.
///
/// Change detection, à la a dirty-flag on mutable access: `deref` is a plain
/// read and never arms; `deref_mut` arms both halves (the safe default).
/// Because a `&self` method can only reach `deref` and a mutating `&mut self`
/// method reaches `deref_mut`, "mutation re-polls, reads don't" is enforced by
/// the borrow checker — a new method can't forget, and a read-only method
/// can't accidentally arm.
///
/// Deliberately has no `Drop`: the API wrappers are held in `let` bindings
/// across other `Rtc` use, and a destructor would extend their borrow to the
/// end of scope. Arming therefore happens eagerly on the mutable access.
///
/// When a mutation only affects one half of the re-poll — and especially when
/// that isn't known until the mutation is underway — take it through
/// [`RtcMut::mutate`] and narrow the returned [`Mutation`] guard.
pub(crate) struct RtcMut<'a> {
    rtc: &'a mut Rtc,
}

impl<'a> RtcMut<'a> {
    pub(crate) fn new(rtc: &'a mut Rtc) -> Self {
        RtcMut { rtc }
    }

    /// Begin a mutation whose re-poll can be narrowed *after the fact*.
    ///
    /// The returned [`Mutation`] derefs to `Rtc`, so mutate through it, then
    /// (optionally, conditionally) call [`Mutation::no_events`] /
    /// [`Mutation::no_timeout`]. It folds its own — per-operation, never shared
    /// — signal into the readiness when it drops.
    ///
    /// Plain `&mut *` (via [`DerefMut`]) is the shorthand for "arm both": it's
    /// what methods that don't narrow, or that return a `&mut` borrowed from
    /// the tree (which can't outlive a guard), use instead.
    pub(crate) fn mutate(&mut self) -> Mutation<'_> {
        Mutation {
            rtc: self.rtc,
            events: true,
            timeout: true,
        }
    }
}

impl Deref for RtcMut<'_> {
    type Target = Rtc;

    fn deref(&self) -> &Rtc {
        self.rtc
    }
}

impl DerefMut for RtcMut<'_> {
    fn deref_mut(&mut self) -> &mut Rtc {
        self.rtc.readiness.wake();
        self.rtc
    }
}

/// A single mutation in progress, obtained from [`RtcMut::mutate`].
///
/// Derefs to `Rtc` for the actual change. Armed for both halves by default;
/// narrow with [`Mutation::no_events`] / [`Mutation::no_timeout`] at any point
/// before it drops — including conditionally, once the mutation has revealed
/// which half it touched. Folds the (possibly narrowed) signal into the
/// readiness on drop.
///
/// The signal is private to this one guard, so narrowing here can never
/// interfere with another method call's decision regardless of call order —
/// the property a long-lived shared guard could not offer.
pub(crate) struct Mutation<'a> {
    rtc: &'a mut Rtc,
    events: bool,
    timeout: bool,
}

impl Mutation<'_> {
    /// Assert this mutation queued no event or transmit.
    pub(crate) fn no_events(&mut self) {
        self.events = false;
    }

    /// Assert this mutation moved no timer.
    pub(crate) fn no_timeout(&mut self) {
        self.timeout = false;
    }
}

impl Deref for Mutation<'_> {
    type Target = Rtc;

    fn deref(&self) -> &Rtc {
        self.rtc
    }
}

impl DerefMut for Mutation<'_> {
    fn deref_mut(&mut self) -> &mut Rtc {
        self.rtc
    }
}

impl Drop for Mutation<'_> {
    fn drop(&mut self) {
        let mut wake = self.rtc.readiness.wake();
        if !self.events {
            wake.no_events();
        }
        if !self.timeout {
            wake.no_timeout();
        }
    }
}

/// The accumulated re-poll signal owned by [`Rtc`][crate::Rtc].
///
/// `poll_output` reads it to decide whether to walk the event pipeline and
/// whether to recompute the next timeout, clearing each half once it has
/// proven that part of the tree quiescent.
#[derive(Debug)]
pub(crate) struct Readiness {
    events: bool,
    timeout: bool,
    // Only send queues were written since the timeout was computed (see
    // `Rtc::release_written`): a recompute is still due, but stamping those queues
    // can stand in for it.
    written: bool,
    // Only send queues were written since the event pipeline was drained: the session
    // has datagrams to send, and no other part of the tree has anything new.
    transmit: bool,
}

impl Readiness {
    /// A fresh instance must poll the whole tree once.
    pub(crate) fn armed() -> Self {
        Readiness {
            events: true,
            timeout: true,
            written: false,
            transmit: false,
        }
    }

    pub(crate) fn wants_events(&self) -> bool {
        self.events
    }

    pub(crate) fn wants_timeout(&self) -> bool {
        self.timeout || self.written
    }

    /// Whether anything but a send queue write moved since the timeout was computed.
    pub(crate) fn wants_full_timeout(&self) -> bool {
        self.timeout
    }

    /// Packets were written to a send queue: datagrams to send, a timeout to recompute
    /// unless `Rtc::release_written` stamps the queues instead.
    pub(crate) fn mark_written(&mut self) {
        self.transmit = true;
        self.written = true;
    }

    /// Whether the session may have datagrams while nothing else has output.
    pub(crate) fn wants_transmit(&self) -> bool {
        self.transmit
    }

    /// The session's datagrams are sent.
    pub(crate) fn clear_transmit(&mut self) {
        self.transmit = false;
    }

    /// The written queues were stamped and the timeout brought up to date with them.
    pub(crate) fn clear_written(&mut self) {
        self.written = false;
    }

    pub(crate) fn clear_events(&mut self) {
        self.events = false;
        self.transmit = false;
    }

    pub(crate) fn clear_timeout(&mut self) {
        self.timeout = false;
        self.written = false;
    }

    /// Hand out an armed guard for a mutable descent into the tree.
    pub(crate) fn wake(&mut self) -> Wake<'_> {
        Wake {
            readiness: self,
            events: true,
            timeout: true,
        }
    }
}

/// An armed guard threaded into a component's mutating methods.
///
/// Narrowed locally by the component and folded into [`Readiness`] on drop.
/// See the [module docs][self].
///
/// Dropping it immediately (e.g. `self.rtc.readiness.wake();`) is the
/// conservative default: it re-polls everything. Narrow first to do less.
pub(crate) struct Wake<'a> {
    readiness: &'a mut Readiness,
    events: bool,
    timeout: bool,
}

impl Wake<'_> {
    /// Assert this path queued no event or transmit, so the event pipeline
    /// need not be walked on its behalf.
    pub(crate) fn no_events(&mut self) {
        self.events = false;
    }

    /// Assert this path did not move any timer, so the next timeout need not
    /// be recomputed on its behalf.
    pub(crate) fn no_timeout(&mut self) {
        self.timeout = false;
    }
}

impl Drop for Wake<'_> {
    fn drop(&mut self) {
        self.readiness.events |= self.events;
        self.readiness.timeout |= self.timeout;
    }
}

#[cfg(test)]
impl Readiness {
    pub(crate) fn idle() -> Self {
        Self {
            events: false,
            timeout: false,
            written: false,
            transmit: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bwe::Bitrate;
    use crate::crypto::dtls::{KeyingMaterial, SrtpProfile};
    use crate::media::MediaKind;
    use crate::{Input, Output};
    use std::time::Instant;

    fn idle_rtc() -> Rtc {
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .enable_bwe(Some(Bitrate::kbps(300)))
            .build(now);
        let profile = SrtpProfile::AEAD_AES_128_GCM;
        let mat = KeyingMaterial::new(&vec![0; profile.keying_material_len()]);
        rtc.session
            .set_keying_material(mat, crate::crypto::test_default_provider(), profile, true);
        rtc.direct_api()
            .declare_media("vid".into(), MediaKind::Video);
        rtc.direct_api()
            .declare_stream_tx(42.into(), None, "vid".into(), None);
        rtc.handle_input(Input::Timeout(now)).unwrap();
        while !matches!(rtc.poll_output().unwrap(), Output::Timeout(_)) {}
        assert!(!rtc.readiness.wants_events());
        assert!(!rtc.readiness.wants_timeout());
        rtc
    }

    #[test]
    fn readiness_bwe_set_bitrate_only_wakes_timeout() {
        let mut rtc = idle_rtc();
        rtc.bwe().set_bitrate(Bitrate::kbps(100), Bitrate::mbps(2));
        assert!(!rtc.readiness.wants_events());
        assert!(rtc.readiness.wants_timeout());
        assert!(
            rtc.session.poll_event().is_none(),
            "no hidden event behind the narrowed flag"
        );
        let expected = rtc.poll_timeout();
        assert!(matches!(rtc.poll_output().unwrap(), Output::Timeout(at) if at == expected));
    }

    #[test]
    fn readiness_bwe_reset_only_wakes_timeout() {
        let mut rtc = idle_rtc();
        rtc.bwe().reset(Bitrate::kbps(900));
        assert!(!rtc.readiness.wants_events());
        assert!(rtc.readiness.wants_timeout());
        assert!(
            rtc.session.poll_event().is_none(),
            "reset produces estimates on a later timeout"
        );
        let expected = rtc.poll_timeout();
        assert!(matches!(rtc.poll_output().unwrap(), Output::Timeout(at) if at == expected));
    }

    #[test]
    fn readiness_outgoing_app_feedback_only_wakes_events() {
        let mut rtc = idle_rtc();
        let before = rtc.session.poll_timeout();
        rtc.direct_api()
            .send_app_specific_feedback(42.into(), 43.into(), vec![1, 2, 3, 4]);
        assert!(rtc.readiness.wants_events());
        assert!(!rtc.readiness.wants_timeout());
        assert_eq!(rtc.session.poll_timeout(), before);
        assert!(
            rtc.session.poll_datagram(rtc.last_now).is_some(),
            "queued feedback must be sendable without a timeout"
        );
    }

    #[test]
    fn readiness_api_narrowing_preserves_other_mutations() {
        for feedback_first in [false, true] {
            let mut rtc = idle_rtc();
            if feedback_first {
                rtc.direct_api()
                    .send_app_specific_feedback(42.into(), 43.into(), vec![1, 2, 3, 4]);
                rtc.bwe().reset(Bitrate::kbps(900));
            } else {
                rtc.bwe().reset(Bitrate::kbps(900));
                rtc.direct_api()
                    .send_app_specific_feedback(42.into(), 43.into(), vec![1, 2, 3, 4]);
            }
            assert!(rtc.readiness.wants_events());
            assert!(rtc.readiness.wants_timeout());
        }
    }

    /// An idle `Rtc` without bandwidth estimation, its one video send stream declared.
    fn idle_sender(now: Instant) -> (Rtc, crate::rtp_::Pt) {
        let mut rtc = Rtc::builder().build(now);
        let profile = SrtpProfile::AEAD_AES_128_GCM;
        let mat = KeyingMaterial::new(&vec![0; profile.keying_material_len()]);
        rtc.session
            .set_keying_material(mat, crate::crypto::test_default_provider(), profile, true);
        rtc.direct_api()
            .declare_media("vid".into(), MediaKind::Video);
        let pt = rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.spec().codec.is_video())
            .expect("a video codec")
            .pt();
        rtc.direct_api()
            .declare_stream_tx(42.into(), None, "vid".into(), None);
        rtc.handle_input(Input::Timeout(now)).unwrap();
        while !matches!(rtc.poll_output().unwrap(), Output::Timeout(_)) {}
        (rtc, pt)
    }

    /// As if ICE had nominated a pair: 127.0.0.1:1000 -> 127.0.0.1:2000.
    fn nominate_pair(rtc: &mut Rtc) {
        rtc.send_addr = Some(crate::SendAddr {
            proto: crate::net::Protocol::Udp,
            source: "127.0.0.1:1000".parse().unwrap(),
            destination: "127.0.0.1:2000".parse().unwrap(),
        });
    }

    fn write(rtc: &mut Rtc, pt: crate::rtp_::Pt, seq: u64, now: Instant) -> bool {
        let rtp = crate::streams::RtpWrite::new(pt, seq.into(), 90 * seq as u32, now, vec![1u8; 100]);
        rtc.direct_api().write_rtp_by_mid("vid".into(), None, rtp)
    }

    #[test]
    fn written_packets_are_released_from_the_cached_timeout() {
        let now = Instant::now();
        let (mut rtc, pt) = idle_sender(now);
        // A timeout no subsystem would compute: a pass would replace it.
        let sentinel = now + std::time::Duration::from_secs(3600);
        rtc.cached_timeout = sentinel;

        assert!(write(&mut rtc, pt, 1, now));
        assert!(!rtc.readiness.wants_events(), "no event source moved");
        assert!(rtc.readiness.wants_transmit());
        assert!(rtc.readiness.wants_timeout(), "a plain poll still recomputes");
        assert!(!rtc.readiness.wants_full_timeout());

        let later = now + std::time::Duration::from_millis(5);
        rtc.release_written(later).unwrap();
        assert_eq!(rtc.cached_timeout, sentinel, "no timer asked again");
        assert!(!rtc.readiness.wants_timeout());
        assert!(rtc.readiness.wants_transmit());
        // (No ICE here, so no `Output::Transmit`: the session's datagram shows it.)
        assert!(
            rtc.session.poll_datagram(later).is_some(),
            "the written packet is released"
        );
        assert_eq!(rtc.poll_timeout(), sentinel);
    }

    #[test]
    fn written_packets_leave_without_walking_the_event_sources() {
        let now = Instant::now();
        let (mut rtc, pt) = idle_sender(now);
        nominate_pair(&mut rtc);
        let sentinel = now + std::time::Duration::from_secs(3600);
        rtc.cached_timeout = sentinel;
        assert!(!rtc.readiness.wants_events());

        assert!(write(&mut rtc, pt, 1, now));
        assert!(write(&mut rtc, pt, 2, now));
        let later = now + std::time::Duration::from_millis(5);
        rtc.release_written(later).unwrap();
        for _ in 0..2 {
            assert!(matches!(rtc.poll_output().unwrap(), Output::Transmit(_)));
            assert!(!rtc.readiness.wants_events(), "the fast path was taken");
        }
        assert!(matches!(rtc.poll_output().unwrap(), Output::Timeout(at) if at == sentinel));
        assert!(!rtc.readiness.wants_transmit());
    }

    #[test]
    fn poll_written_gives_written_packets_and_leaves_the_rest_to_poll_output() {
        let now = Instant::now();
        let (mut rtc, pt) = idle_sender(now);
        nominate_pair(&mut rtc);
        let sentinel = now + std::time::Duration::from_secs(3600);
        rtc.cached_timeout = sentinel;

        assert!(rtc.poll_written().is_none(), "nothing written");
        assert!(write(&mut rtc, pt, 1, now));
        assert!(write(&mut rtc, pt, 2, now));
        let later = now + std::time::Duration::from_millis(5);
        rtc.release_written(later).unwrap();
        assert_eq!(rtc.poll_written_timeout(), None, "packets to send first");
        let bytes_before = rtc.peer_bytes_tx;
        let mut bytes = 0;
        for _ in 0..2 {
            let t = rtc.poll_written().expect("a written packet");
            assert_eq!(t.destination, "127.0.0.1:2000".parse().unwrap());
            bytes += t.contents.len() as u64;
        }
        assert_eq!(rtc.peer_bytes_tx - bytes_before, bytes, "counted as poll_output counts");
        assert!(rtc.poll_written().is_none());
        assert!(!rtc.readiness.wants_transmit());
        assert_eq!(rtc.poll_written_timeout(), Some(sentinel));
        assert!(matches!(rtc.poll_output().unwrap(), Output::Timeout(at) if at == sentinel));

        // After any other mutation, everything goes through poll_output.
        assert!(rtc.direct_api().stream_tx(&42.into()).is_some());
        assert!(write(&mut rtc, pt, 3, later));
        rtc.release_written(later).unwrap();
        assert!(rtc.poll_written().is_none(), "other output may be pending");
        assert_eq!(rtc.poll_written_timeout(), None);
        let mut sent = 0;
        loop {
            match rtc.poll_output().unwrap() {
                Output::Transmit(_) => sent += 1,
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
        assert!(sent >= 1, "the third packet left through poll_output");
    }

    #[test]
    fn a_write_after_another_mutation_gets_the_full_pass() {
        let now = Instant::now();
        let (mut rtc, pt) = idle_sender(now);
        let sentinel = now + std::time::Duration::from_secs(3600);
        rtc.cached_timeout = sentinel;

        // `stream_tx` hands out the stream to do anything with: it arms a recompute.
        assert!(rtc.direct_api().stream_tx(&42.into()).is_some());
        assert!(write(&mut rtc, pt, 1, now));
        assert!(rtc.readiness.wants_full_timeout());

        let later = now + std::time::Duration::from_millis(5);
        rtc.release_written(later).unwrap();
        assert_ne!(rtc.cached_timeout, sentinel, "every timer asked again");
        assert!(rtc.session.poll_datagram(later).is_some());
    }

    #[test]
    fn writing_to_a_missing_stream_moves_nothing() {
        let now = Instant::now();
        let (mut rtc, pt) = idle_sender(now);
        let rtp = crate::streams::RtpWrite::new(pt, 1.into(), 90, now, vec![1u8; 100]);
        assert!(!rtc.direct_api().write_rtp_by_mid("aud".into(), None, rtp));
        assert!(!rtc.readiness.wants_events());
        assert!(!rtc.readiness.wants_transmit());
        assert!(!rtc.readiness.wants_timeout());
    }

    #[test]
    fn narrowing_preserves_other_operations() {
        for events in [false, true] {
            for timeout in [false, true] {
                let mut readiness = Readiness {
                    events,
                    timeout,
                    written: false,
                    transmit: false,
                };
                {
                    let mut wake = readiness.wake();
                    wake.no_events();
                    wake.no_timeout();
                }
                assert_eq!(readiness.wants_events(), events);
                assert_eq!(readiness.wants_timeout(), timeout);
            }
        }
    }
}

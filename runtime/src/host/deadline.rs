//! `wasi:clocks/monotonic-clock` with the call's wall-clock budget.
//!
//! A guest that sleeps (`subscribe-duration` then `poll`/`block`) waits inside the host,
//! where the epoch deadline that stops a call cannot interrupt it: a component could hold its
//! blocking thread, and its tenant's call slot, for as long as it asked. So every pollable
//! this interface hands out fires at the latest when the call's `limits.wall_ms` is spent;
//! the guest then wakes up, and the first epoch check stops the call. Everything else
//! delegates to wasmtime-wasi.

use std::time::Duration;
use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{
    self, Duration as WasiDuration, Instant,
};

pub(crate) struct DeadlineClock;

impl HasData for DeadlineClock {
    type Data<'a> = DeadlineClockView<'a>;
}

pub(crate) struct DeadlineClockView<'a> {
    pub inner: WasiClocksCtxView<'a>,
    /// What is left of the call's wall-clock budget.
    pub remaining: Duration,
}

impl DeadlineClockView<'_> {
    fn cap(&self, nanos: u64) -> u64 {
        nanos.min(self.remaining.as_nanos().min(u128::from(u64::MAX)) as u64)
    }
}

impl monotonic_clock::Host for DeadlineClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        monotonic_clock::Host::now(&mut self.inner)
    }

    fn resolution(&mut self) -> wasmtime::Result<WasiDuration> {
        monotonic_clock::Host::resolution(&mut self.inner)
    }

    fn subscribe_instant(&mut self, when: Instant) -> wasmtime::Result<Resource<DynPollable>> {
        let now = monotonic_clock::Host::now(&mut self.inner)?;
        let wait = self.cap(when.saturating_sub(now));
        monotonic_clock::Host::subscribe_duration(&mut self.inner, wait)
    }

    fn subscribe_duration(
        &mut self,
        duration: WasiDuration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let wait = self.cap(duration);
        monotonic_clock::Host::subscribe_duration(&mut self.inner, wait)
    }
}

//! Reconnect pacing for relay agents: doubling delays from a floor to a ceiling,
//! back to the floor once a connection has worked.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    floor: Duration,
    ceiling: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(floor: Duration, ceiling: Duration) -> Self {
        let ceiling = ceiling.max(floor);
        Backoff { floor, ceiling, next: floor }
    }

    /// The pause before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.ceiling);
        delay
    }

    /// The relay worked: start again from the floor.
    pub fn reset(&mut self) {
        self.next = self.floor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_millis(1000));
        let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }
}

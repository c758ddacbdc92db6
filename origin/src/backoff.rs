//! The delay between retries of something that failed: doubling from a
//! first delay up to a cap, and back to the first after a success.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            current: first,
        }
    }

    /// The delay to wait now; the next one is twice as long (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(350));
        assert_eq!(
            [(); 4].map(|_| backoff.next_delay()),
            [ms(100), ms(200), ms(350), ms(350)]
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(100));
    }
}

//! A page of chat events aimed at one socket (a `resume` answer, the re-send on connect or on a
//! Socket.IO room join) holds at most `PAGE_MESSAGES` messages and `PAGE_BYTES` bytes of event
//! JSON (contract section 12): one user's long absence, or another's flood of long messages, must
//! never become one burst a socket's queue (64 KiB frames, 256 of them) cannot hold. `resume`
//! says `has_more` when a page was cut short, and the client asks for the next one.
//!
//! The bytes are those of the events as serialized, measured while the page is built. So that
//! Postgres does not send a page's worth of rows nobody will send on, `bounded_page!` keeps only
//! the rows a page could take by the length of their text, a lower bound of their events'.

use crate::outbox::Delivery;

/// Messages one page holds at most.
pub const PAGE_MESSAGES: usize = 200;
/// Bytes of event JSON one page holds at most.
pub const PAGE_BYTES: usize = 256 * 1024;

/// Wraps the query `$candidates` (its pieces are concatenated: chat message rows of one session
/// with a `seq` and a `message_text`, in `seq` order and `LIMIT`ed) so that only the rows a page
/// of `$budget` bytes (a bind parameter) could take come back: those whose predecessors' text,
/// the first row's aside, fits in the budget. Every row that fits comes back, and so does the row
/// that first does not (the first row always goes on a page, so its own length must not hide the
/// next one), which is how a page knows it was cut short. The rows left out stay in Postgres
/// (`octet_length` reads a stored text's length without its bytes).
#[macro_export]
macro_rules! bounded_page {
    ($budget:literal, $($candidates:expr),+ $(,)?) => {
        concat!(
            "SELECT * FROM (
                 SELECT candidates.*,
                        COALESCE(sum(octet_length(message_text)) OVER (ORDER BY seq
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                        - first_value(octet_length(message_text)) OVER (ORDER BY seq)
                            AS text_bytes_between
                 FROM (",
            $($candidates),+,
            ") candidates) measured
             WHERE text_bytes_between <= ",
            $budget,
            " ORDER BY seq"
        )
    };
}

/// The events of one page, added in order until the next one would not fit.
pub struct Page {
    deliveries: Vec<Delivery>,
    bytes: usize,
    byte_budget: usize,
    cut_short: bool,
}

impl Page {
    /// A page of at most `byte_budget` bytes of events (what else goes to the socket with them,
    /// such as `resume`'s `session_state`, is subtracted by the caller).
    pub fn with_byte_budget(byte_budget: usize) -> Page {
        Page {
            deliveries: Vec::new(),
            bytes: 0,
            byte_budget,
            cut_short: false,
        }
    }

    /// Takes `delivery` if it fits (the first always does, so paging always moves on); once one
    /// does not, the page is full and takes nothing more.
    pub fn offer(&mut self, delivery: Delivery) -> bool {
        let length = delivery.frame.len();
        let fits = !self.cut_short
            && self.deliveries.len() < PAGE_MESSAGES
            && (self.deliveries.is_empty() || self.bytes + length <= self.byte_budget);
        if !fits {
            self.cut_short = true;
            return false;
        }
        self.bytes += length;
        self.deliveries.push(delivery);
        true
    }

    /// Whether something offered was left out: the client has more to ask for.
    pub fn cut_short(&self) -> bool {
        self.cut_short
    }

    pub fn into_deliveries(self) -> Vec<Delivery> {
        self.deliveries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::frames::Event;

    fn delivery_of(bytes: usize) -> Delivery {
        let mut delivery = Delivery::to_socket(
            "u",
            "c",
            &Event::Pong {
                timestamp: String::new(),
            },
        );
        delivery.frame = "x".repeat(bytes);
        delivery
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_and_says_so() {
        let mut page = Page::with_byte_budget(100);
        assert!(page.offer(delivery_of(60)));
        assert!(page.offer(delivery_of(40)));
        assert!(!page.cut_short());
        assert!(!page.offer(delivery_of(1)));
        assert!(page.cut_short());
        assert_eq!(page.into_deliveries().len(), 2);
    }

    #[test]
    fn a_page_stops_at_200_messages() {
        let mut page = Page::with_byte_budget(PAGE_BYTES);
        for _ in 0..PAGE_MESSAGES {
            assert!(page.offer(delivery_of(10)));
        }
        assert!(!page.offer(delivery_of(10)));
        assert!(page.cut_short());
    }

    #[test]
    fn the_first_event_always_goes_on_the_page_so_paging_moves_on() {
        let mut page = Page::with_byte_budget(10);
        assert!(page.offer(delivery_of(50)));
        assert!(!page.offer(delivery_of(1)));
        assert_eq!(page.into_deliveries().len(), 1);
    }

    #[test]
    fn nothing_is_taken_after_the_page_was_cut_short() {
        let mut page = Page::with_byte_budget(100);
        assert!(page.offer(delivery_of(90)));
        assert!(!page.offer(delivery_of(20)));
        assert!(
            !page.offer(delivery_of(5)),
            "a smaller one would skip a message"
        );
    }
}

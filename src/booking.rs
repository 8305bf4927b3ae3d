//! The booking record and its rules (SPEC §2), kept pure so that every node
//! and every test agrees on what a valid booking is.
//!
//! The HTTP routes turn request bodies into [`Booking`]s here (POST via
//! [`Booking::from_json`], PATCH via [`Booking::patched`]) and write responses
//! with [`Booking::write_json`]; the SQLite store relies on [`Booking::validate`]
//! having held for everything it is given. Nothing here does I/O.
//!
//! Checks run in one deterministic order so that a client always sees the same
//! complaint for the same body: first "the body must be a JSON object", then the
//! first unknown field in document order, then each field in the order of
//! [`FIELDS`] (its type, then its rule). A rejection is an [`Invalid`] holding
//! one sentence that names the field and says what would be accepted.

use crate::json::{self, Value};
use std::fmt;

/// The 19 field names, in the order of the SPEC table; responses carry exactly
/// these fields in exactly this order.
pub const FIELDS: [&str; 19] = [
    "booking_id",
    "customer_id",
    "customer_name",
    "destination",
    "departure_city",
    "flight_number",
    "hotel_name",
    "room_type",
    "payment_method",
    "email",
    "phone",
    "booking_date",
    "travel_date",
    "return_date",
    "total_price",
    "payment_status",
    "travel_agency",
    "special_requests",
    "loyalty_program_number",
];

/// The accepted values of `payment_status`, in the order error messages list them.
pub const PAYMENT_STATUSES: [&str; 4] = ["Pending", "Paid", "Refunded", "Cancelled"];

/// Longest accepted required text field (and `email`, `phone`), in characters.
const MAX_TEXT: usize = 200;
/// Longest accepted optional text field, in characters.
const MAX_OPTIONAL_TEXT: usize = 1000;
/// Longest accepted `booking_id`, in (ASCII) characters.
const MAX_ID: usize = 64;
/// Longest unknown field name echoed back in an error, in characters.
const MAX_ECHOED_NAME: usize = 64;

/// One travel booking, with fields in the SPEC table's order.
///
/// A `Booking` obtained from [`Booking::from_json`] or [`Booking::patched`]
/// always satisfies [`Booking::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Booking {
    pub booking_id: String,
    pub customer_id: String,
    pub customer_name: String,
    pub destination: String,
    pub departure_city: String,
    pub flight_number: String,
    pub hotel_name: String,
    pub room_type: String,
    pub payment_method: String,
    pub email: String,
    pub phone: String,
    pub booking_date: String,
    pub travel_date: String,
    pub return_date: Option<String>,
    pub total_price: f64,
    pub payment_status: String,
    pub travel_agency: Option<String>,
    pub special_requests: Option<String>,
    pub loyalty_program_number: Option<String>,
}

/// Why a booking (or a body) was rejected: one sentence a person can act on,
/// naming the field verbatim, e.g. "travel_date must be a date like 2025-06-01".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

fn invalid(sentence: impl Into<String>) -> Invalid {
    Invalid(sentence.into())
}

/// Every field, in [`FIELDS`] order; the exhaustive matches below keep the
/// struct, the names and the rules in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    BookingId,
    CustomerId,
    CustomerName,
    Destination,
    DepartureCity,
    FlightNumber,
    HotelName,
    RoomType,
    PaymentMethod,
    Email,
    Phone,
    BookingDate,
    TravelDate,
    ReturnDate,
    TotalPrice,
    PaymentStatus,
    TravelAgency,
    SpecialRequests,
    LoyaltyProgramNumber,
}

/// The rule a field follows; it also fixes the field's JSON type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// `[A-Za-z0-9_-]{1,64}`.
    Id,
    /// Required, non-empty, at most 200 characters.
    Text,
    /// Required, exactly one '@' with text on both sides, at most 200 characters.
    Email,
    /// Required, non-empty, at most 200 characters.
    Phone,
    /// Required calendar date `YYYY-MM-DD`.
    Date,
    /// Optional date, not before `travel_date`.
    ReturnDate,
    /// Required finite number, at least 0.
    Price,
    /// Required, one of [`PAYMENT_STATUSES`].
    Status,
    /// Optional string of at most 1000 characters (empty allowed).
    OptionalText,
}

impl Field {
    const ALL: [Field; 19] = [
        Field::BookingId,
        Field::CustomerId,
        Field::CustomerName,
        Field::Destination,
        Field::DepartureCity,
        Field::FlightNumber,
        Field::HotelName,
        Field::RoomType,
        Field::PaymentMethod,
        Field::Email,
        Field::Phone,
        Field::BookingDate,
        Field::TravelDate,
        Field::ReturnDate,
        Field::TotalPrice,
        Field::PaymentStatus,
        Field::TravelAgency,
        Field::SpecialRequests,
        Field::LoyaltyProgramNumber,
    ];

    fn name(self) -> &'static str {
        FIELDS[self as usize]
    }

    fn rule(self) -> Rule {
        match self {
            Field::BookingId => Rule::Id,
            Field::CustomerId
            | Field::CustomerName
            | Field::Destination
            | Field::DepartureCity
            | Field::FlightNumber
            | Field::HotelName
            | Field::RoomType
            | Field::PaymentMethod => Rule::Text,
            Field::Email => Rule::Email,
            Field::Phone => Rule::Phone,
            Field::BookingDate | Field::TravelDate => Rule::Date,
            Field::ReturnDate => Rule::ReturnDate,
            Field::TotalPrice => Rule::Price,
            Field::PaymentStatus => Rule::Status,
            Field::TravelAgency | Field::SpecialRequests | Field::LoyaltyProgramNumber => {
                Rule::OptionalText
            }
        }
    }

    /// The sentence for a value of the wrong JSON type.
    fn type_error(self) -> Invalid {
        let name = self.name();
        match self.rule() {
            Rule::Id | Rule::Text | Rule::Email | Rule::Phone => {
                invalid(format!("{name} must be a string"))
            }
            Rule::Date => date_error(name),
            Rule::ReturnDate => return_date_error(),
            Rule::Price => invalid(format!("{name} must be a number")),
            Rule::Status => status_error(),
            Rule::OptionalText => invalid(format!("{name} must be a string or null")),
        }
    }
}

fn date_error(name: &str) -> Invalid {
    invalid(format!("{name} must be a date like 2025-06-01"))
}

fn return_date_error() -> Invalid {
    invalid("return_date must be a date like 2025-06-01 or null")
}

fn status_error() -> Invalid {
    invalid(format!(
        "payment_status must be one of {}",
        PAYMENT_STATUSES.join(", ")
    ))
}

/// A field's current value, read-only.
enum Slot<'a> {
    Required(&'a str),
    Optional(Option<&'a str>),
    Number(f64),
}

/// A field's storage, for merging a body into a booking.
enum SlotMut<'a> {
    Required(&'a mut String),
    Optional(&'a mut Option<String>),
    Number(&'a mut f64),
}

/// Whether a body creates a booking (POST) or changes one (PATCH).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Patch,
}

impl Booking {
    /// Create from a POST body. `new_id` is called only when the body has no
    /// `booking_id` (absent or `null`).
    pub fn from_json(body: &Value, new_id: impl FnOnce() -> String) -> Result<Booking, Invalid> {
        Booking::blank().merge(body, Mode::Create, Some(new_id))
    }

    /// Merge a PATCH body into this booking and validate the result as a whole.
    ///
    /// Fields absent from the patch keep their value; `null` clears an optional
    /// field and is rejected for a required one; `booking_id` may be repeated
    /// but not changed.
    pub fn patched(&self, patch: &Value) -> Result<Booking, Invalid> {
        self.clone()
            .merge(patch, Mode::Patch, None::<fn() -> String>)
    }

    /// Check every field rule, in [`FIELDS`] order; the first broken rule wins.
    pub fn validate(&self) -> Result<(), Invalid> {
        Field::ALL.iter().try_for_each(|&field| self.check(field))
    }

    /// Append the booking as a compact JSON object: exactly the 19 fields of
    /// [`FIELDS`], in that order, unset optional fields as `null`.
    pub fn write_json(&self, out: &mut String) {
        out.push('{');
        for (i, &field) in Field::ALL.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json::write_str(out, field.name());
            out.push(':');
            match self.slot(field) {
                Slot::Required(s) | Slot::Optional(Some(s)) => json::write_str(out, s),
                Slot::Optional(None) => out.push_str("null"),
                Slot::Number(n) => json::write_number(out, n),
            }
        }
        out.push('}');
    }

    /// The booking as a compact JSON object; see [`Booking::write_json`].
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(512);
        self.write_json(&mut out);
        out
    }

    /// The starting point of a create: everything empty, so every required
    /// field must come from the body.
    fn blank() -> Booking {
        Booking {
            booking_id: String::new(),
            customer_id: String::new(),
            customer_name: String::new(),
            destination: String::new(),
            departure_city: String::new(),
            flight_number: String::new(),
            hotel_name: String::new(),
            room_type: String::new(),
            payment_method: String::new(),
            email: String::new(),
            phone: String::new(),
            booking_date: String::new(),
            travel_date: String::new(),
            return_date: None,
            total_price: 0.0,
            payment_status: String::new(),
            travel_agency: None,
            special_requests: None,
            loyalty_program_number: None,
        }
    }

    fn slot(&self, field: Field) -> Slot<'_> {
        match field {
            Field::BookingId => Slot::Required(&self.booking_id),
            Field::CustomerId => Slot::Required(&self.customer_id),
            Field::CustomerName => Slot::Required(&self.customer_name),
            Field::Destination => Slot::Required(&self.destination),
            Field::DepartureCity => Slot::Required(&self.departure_city),
            Field::FlightNumber => Slot::Required(&self.flight_number),
            Field::HotelName => Slot::Required(&self.hotel_name),
            Field::RoomType => Slot::Required(&self.room_type),
            Field::PaymentMethod => Slot::Required(&self.payment_method),
            Field::Email => Slot::Required(&self.email),
            Field::Phone => Slot::Required(&self.phone),
            Field::BookingDate => Slot::Required(&self.booking_date),
            Field::TravelDate => Slot::Required(&self.travel_date),
            Field::ReturnDate => Slot::Optional(self.return_date.as_deref()),
            Field::TotalPrice => Slot::Number(self.total_price),
            Field::PaymentStatus => Slot::Required(&self.payment_status),
            Field::TravelAgency => Slot::Optional(self.travel_agency.as_deref()),
            Field::SpecialRequests => Slot::Optional(self.special_requests.as_deref()),
            Field::LoyaltyProgramNumber => Slot::Optional(self.loyalty_program_number.as_deref()),
        }
    }

    fn slot_mut(&mut self, field: Field) -> SlotMut<'_> {
        match field {
            Field::BookingId => SlotMut::Required(&mut self.booking_id),
            Field::CustomerId => SlotMut::Required(&mut self.customer_id),
            Field::CustomerName => SlotMut::Required(&mut self.customer_name),
            Field::Destination => SlotMut::Required(&mut self.destination),
            Field::DepartureCity => SlotMut::Required(&mut self.departure_city),
            Field::FlightNumber => SlotMut::Required(&mut self.flight_number),
            Field::HotelName => SlotMut::Required(&mut self.hotel_name),
            Field::RoomType => SlotMut::Required(&mut self.room_type),
            Field::PaymentMethod => SlotMut::Required(&mut self.payment_method),
            Field::Email => SlotMut::Required(&mut self.email),
            Field::Phone => SlotMut::Required(&mut self.phone),
            Field::BookingDate => SlotMut::Required(&mut self.booking_date),
            Field::TravelDate => SlotMut::Required(&mut self.travel_date),
            Field::ReturnDate => SlotMut::Optional(&mut self.return_date),
            Field::TotalPrice => SlotMut::Number(&mut self.total_price),
            Field::PaymentStatus => SlotMut::Required(&mut self.payment_status),
            Field::TravelAgency => SlotMut::Optional(&mut self.travel_agency),
            Field::SpecialRequests => SlotMut::Optional(&mut self.special_requests),
            Field::LoyaltyProgramNumber => SlotMut::Optional(&mut self.loyalty_program_number),
        }
    }

    /// Merge `body` into `self` field by field, in [`FIELDS`] order, checking
    /// each field's type as it is read and its rule once it is merged. Because
    /// every field is checked (given or not), the result is validated whole;
    /// `return_date` is checked after `travel_date` has been merged.
    fn merge<F: FnOnce() -> String>(
        mut self,
        body: &Value,
        mode: Mode,
        mut new_id: Option<F>,
    ) -> Result<Booking, Invalid> {
        let members = body
            .as_object()
            .ok_or_else(|| invalid("the body must be a JSON object"))?;
        if let Some((key, _)) = members.iter().find(|(k, _)| !FIELDS.contains(&k.as_str())) {
            return Err(unknown_field(key));
        }
        if mode == Mode::Create {
            // Every missing required field at once, so one round trip tells
            // a client all it left out.
            let missing: Vec<&str> = Field::ALL
                .iter()
                .filter(|&&field| field != Field::BookingId)
                .filter(|&&field| matches!(self.slot(field), Slot::Required(_) | Slot::Number(_)))
                .map(|field| field.name())
                .filter(|name| {
                    matches!(
                        members.iter().find(|(k, _)| k == name),
                        None | Some((_, Value::Null))
                    )
                })
                .collect();
            match missing.as_slice() {
                [] => {}
                [one] => return Err(invalid(format!("{one} is required"))),
                many => {
                    return Err(invalid(format!(
                        "{} required fields are missing: {}",
                        many.len(),
                        many.join(", ")
                    )))
                }
            }
        }
        let old_id = self.booking_id.clone();
        for field in Field::ALL {
            let name = field.name();
            let given = members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            match (self.slot_mut(field), given) {
                // Absent: a create needs every required field; a patch keeps it.
                (_, None) if mode == Mode::Patch => {}
                (SlotMut::Optional(slot), None) => *slot = None,
                // `null` clears an optional field.
                (SlotMut::Optional(slot), Some(Value::Null)) => *slot = None,
                // A required field that is absent or `null`.
                (SlotMut::Required(slot), None | Some(Value::Null))
                    if field == Field::BookingId =>
                {
                    match new_id.take() {
                        Some(generate) if mode == Mode::Create => *slot = generate(),
                        _ => return Err(id_cannot_change(&old_id)),
                    }
                }
                (SlotMut::Required(_) | SlotMut::Number(_), None | Some(Value::Null)) => {
                    return Err(match mode {
                        Mode::Create => invalid(format!("{name} is required")),
                        Mode::Patch => invalid(format!("{name} cannot be null: it is required")),
                    });
                }
                // A value: check its JSON type, then store it.
                (SlotMut::Required(slot), Some(value)) => {
                    let text = value.as_str().ok_or_else(|| field.type_error())?;
                    if field == Field::BookingId && mode == Mode::Patch && text != old_id {
                        return Err(id_cannot_change(&old_id));
                    }
                    text.clone_into(slot);
                }
                (SlotMut::Optional(slot), Some(value)) => {
                    let text = value.as_str().ok_or_else(|| field.type_error())?;
                    *slot = Some(text.to_owned());
                }
                (SlotMut::Number(slot), Some(value)) => {
                    *slot = value.as_f64().ok_or_else(|| field.type_error())?;
                }
            }
            self.check(field)?;
        }
        Ok(self)
    }

    /// Check one field's rule against the booking's current values.
    fn check(&self, field: Field) -> Result<(), Invalid> {
        let name = field.name();
        match (field.rule(), self.slot(field)) {
            (Rule::Id, Slot::Required(id)) => {
                if is_valid_id(id) {
                    Ok(())
                } else {
                    Err(invalid(format!(
                        "{name} must be 1 to {MAX_ID} characters, each a letter, digit, '_' or '-'"
                    )))
                }
            }
            (Rule::Text | Rule::Phone, Slot::Required(text)) => check_text(name, text),
            (Rule::Email, Slot::Required(email)) => {
                check_text(name, email)?;
                let mut parts = email.split('@');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(local), Some(domain), None)
                        if !local.is_empty() && !domain.is_empty() =>
                    {
                        Ok(())
                    }
                    _ => Err(invalid(format!(
                        "{name} must contain exactly one '@' with text before and after it"
                    ))),
                }
            }
            (Rule::Date, Slot::Required(date)) => {
                if is_valid_date(date) {
                    Ok(())
                } else {
                    Err(date_error(name))
                }
            }
            (Rule::ReturnDate, Slot::Optional(None)) => Ok(()),
            (Rule::ReturnDate, Slot::Optional(Some(date))) => {
                if !is_valid_date(date) {
                    Err(return_date_error())
                } else if date < self.travel_date.as_str() {
                    Err(invalid(format!(
                        "{name} must not be before travel_date ({})",
                        self.travel_date
                    )))
                } else {
                    Ok(())
                }
            }
            (Rule::Price, Slot::Number(price)) => {
                if price.is_finite() && price >= 0.0 {
                    Ok(())
                } else {
                    Err(invalid(format!("{name} must be a number of at least 0")))
                }
            }
            (Rule::Status, Slot::Required(status)) => {
                if PAYMENT_STATUSES.contains(&status) {
                    Ok(())
                } else {
                    Err(status_error())
                }
            }
            (Rule::OptionalText, Slot::Optional(text)) => match text {
                Some(text) if text.chars().count() > MAX_OPTIONAL_TEXT => Err(invalid(format!(
                    "{name} must be at most {MAX_OPTIONAL_TEXT} characters"
                ))),
                _ => Ok(()),
            },
            // Field::rule and Booking::slot agree on every field (see the
            // exhaustive matches); this arm only satisfies the type checker.
            _ => Err(invalid(format!("{name} has an unexpected shape"))),
        }
    }
}

/// Required text: non-empty and at most 200 characters (not bytes).
fn check_text(name: &str, text: &str) -> Result<(), Invalid> {
    if text.is_empty() {
        Err(invalid(format!("{name} must not be empty")))
    } else if text.chars().count() > MAX_TEXT {
        Err(invalid(format!(
            "{name} must be at most {MAX_TEXT} characters"
        )))
    } else {
        Ok(())
    }
}

fn unknown_field(key: &str) -> Invalid {
    let mut shown: String = key.chars().take(MAX_ECHOED_NAME).collect();
    if shown.len() < key.len() {
        shown.push('…');
    }
    invalid(format!("unknown field '{shown}'"))
}

fn id_cannot_change(old: &str) -> Invalid {
    invalid(format!("booking_id cannot change (it is '{old}')"))
}

/// Whether `id` is an acceptable `booking_id`: 1–64 characters, each an ASCII
/// letter, digit, '_' or '-'.
pub fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `s` is a real calendar date written `YYYY-MM-DD` (years 0001–9999,
/// leap years honoured). Valid dates compare correctly as strings.
pub fn is_valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    match (digits(0..4), digits(5..7), digits(8..10)) {
        (Some(year), Some(month), Some(day)) => {
            year >= 1 && (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)
        }
        _ => false,
    }
}

/// Days in `month` (1–12) of `year`, in the proleptic Gregorian calendar.
pub(crate) fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    const FULL: &str = r#"{
        "booking_id": "bk-0001",
        "customer_id": "CUST-000042",
        "customer_name": "Ada Lovelace",
        "destination": "Lisbon",
        "departure_city": "London",
        "flight_number": "BA2490",
        "hotel_name": "Hotel Avenida Palace",
        "room_type": "Deluxe Double",
        "payment_method": "Credit Card",
        "email": "ada@example.com",
        "phone": "+44 20 7946 0958",
        "booking_date": "2025-03-14",
        "travel_date": "2025-06-01",
        "return_date": "2025-06-08",
        "total_price": 1234.56,
        "payment_status": "Paid",
        "travel_agency": "Trailfinders",
        "special_requests": "Sea view, please",
        "loyalty_program_number": "BA123456789"
    }"#;

    const REQUIRED: [&str; 15] = [
        "customer_id",
        "customer_name",
        "destination",
        "departure_city",
        "flight_number",
        "hotel_name",
        "room_type",
        "payment_method",
        "email",
        "phone",
        "booking_date",
        "travel_date",
        "total_price",
        "payment_status",
        // booking_id is required in a booking but generated on create.
        "booking_id",
    ];

    const OPTIONAL: [&str; 4] = [
        "return_date",
        "travel_agency",
        "special_requests",
        "loyalty_program_number",
    ];

    fn full_value() -> Value {
        parse(FULL.as_bytes()).expect("FULL parses")
    }

    fn no_id() -> String {
        panic!("new_id must not be called when the body has a booking_id")
    }

    fn full() -> Booking {
        Booking::from_json(&full_value(), no_id).expect("FULL is valid")
    }

    /// The full body with `key` set to `value` (appended if absent).
    fn with(key: &str, value: Value) -> Value {
        let mut members = match full_value() {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        match members.iter_mut().find(|(k, _)| k == key) {
            Some(member) => member.1 = value,
            None => members.push((key.to_owned(), value)),
        }
        Value::Object(members)
    }

    fn without(key: &str) -> Value {
        match full_value() {
            Value::Object(m) => Value::Object(m.into_iter().filter(|(k, _)| k != key).collect()),
            _ => unreachable!(),
        }
    }

    fn create(body: &Value) -> Result<Booking, Invalid> {
        Booking::from_json(body, || "generated-id".to_owned())
    }

    fn create_err(body: &Value) -> String {
        create(body).expect_err("body should be rejected").0
    }

    fn patch(patch_json: &str) -> Result<Booking, Invalid> {
        full().patched(&parse(patch_json.as_bytes()).expect("patch parses"))
    }

    fn s(text: &str) -> Value {
        Value::String(text.to_owned())
    }

    #[test]
    fn field_list_matches_the_struct_order_and_has_19_unique_names() {
        for (i, field) in Field::ALL.iter().enumerate() {
            assert_eq!(*field as usize, i);
        }
        let mut names = FIELDS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 19);
    }

    #[test]
    fn a_full_valid_body_round_trips_through_json() {
        let booking = full();
        assert_eq!(booking.booking_id, "bk-0001");
        assert_eq!(booking.total_price, 1234.56);
        assert_eq!(booking.return_date.as_deref(), Some("2025-06-08"));
        let text = booking.to_json();
        let again = Booking::from_json(&parse(text.as_bytes()).expect("output parses"), no_id)
            .expect("output is a valid body");
        assert_eq!(again, booking);
        assert_eq!(booking.validate(), Ok(()));
    }

    #[test]
    fn output_has_exactly_the_19_fields_in_table_order_with_nulls_for_unset() {
        let mut booking = full();
        booking.return_date = None;
        booking.travel_agency = None;
        booking.special_requests = None;
        booking.loyalty_program_number = None;
        let out = parse(booking.to_json().as_bytes()).expect("output parses");
        let members = out.as_object().expect("an object");
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, FIELDS);
        for name in OPTIONAL {
            assert!(out.get(name).is_some_and(Value::is_null), "{name} is null");
        }
        assert_eq!(out.get("total_price"), Some(&Value::Number(1234.56)));
    }

    #[test]
    fn output_is_compact() {
        let text = full().to_json();
        assert!(text.starts_with("{\"booking_id\":\"bk-0001\",\"customer_id\":"));
        assert!(text.contains("\"total_price\":1234.56,"));
        assert!(!text.contains(": "));
    }

    #[test]
    fn a_body_that_is_not_an_object_is_rejected() {
        for body in ["[]", "null", "\"booking\"", "42", "true"] {
            let value = parse(body.as_bytes()).expect("parses");
            assert_eq!(create_err(&value), "the body must be a JSON object");
            assert_eq!(
                full().patched(&value),
                Err(Invalid("the body must be a JSON object".into()))
            );
        }
    }

    #[test]
    fn each_missing_required_field_is_named() {
        for name in REQUIRED.iter().filter(|&&n| n != "booking_id") {
            assert_eq!(create_err(&without(name)), format!("{name} is required"));
        }
    }

    #[test]
    fn a_required_field_given_as_null_counts_as_missing() {
        for name in REQUIRED.iter().filter(|&&n| n != "booking_id") {
            assert_eq!(
                create_err(&with(name, Value::Null)),
                format!("{name} is required")
            );
        }
    }

    #[test]
    fn missing_optional_fields_are_fine_and_become_null() {
        let mut body = full_value();
        for name in OPTIONAL {
            body = match body {
                Value::Object(m) => {
                    Value::Object(m.into_iter().filter(|(k, _)| k != name).collect())
                }
                other => other,
            };
        }
        let booking = create(&body).expect("valid without optional fields");
        assert_eq!(booking.return_date, None);
        assert_eq!(booking.travel_agency, None);
        assert_eq!(booking.special_requests, None);
        assert_eq!(booking.loyalty_program_number, None);
    }

    #[test]
    fn an_empty_object_reports_every_required_field() {
        let err = create_err(&Value::Object(Vec::new()));
        assert!(
            err.starts_with("14 required fields are missing: customer_id, "),
            "{err}"
        );
        let required: Vec<&str> = Field::ALL
            .iter()
            .filter(|&&f| f != Field::BookingId)
            .filter(|&&f| !matches!(Booking::blank().slot(f), Slot::Optional(_)))
            .map(|f| f.name())
            .collect();
        assert_eq!(required.len(), 14);
        for name in required {
            assert!(err.contains(name), "{name} missing from: {err}");
        }
        assert!(
            !err.contains("travel_agency"),
            "an optional field is not required: {err}"
        );
    }

    #[test]
    fn the_first_unknown_field_is_named_before_anything_else() {
        let mut body = with("colour", s("teal"));
        if let Value::Object(m) = &mut body {
            m.push(("size".into(), s("XL")));
            m.retain(|(k, _)| k != "customer_name");
        }
        assert_eq!(create_err(&body), "unknown field 'colour'");
    }

    #[test]
    fn a_very_long_unknown_field_name_is_shortened_in_the_message() {
        let key = "x".repeat(5000);
        let message = create_err(&with(&key, Value::Null));
        assert!(message.len() < 100, "{message}");
        assert!(message.starts_with("unknown field 'xxx"));
    }

    #[test]
    fn errors_follow_table_order() {
        // Both customer_name and total_price are bad; customer_name comes first.
        let mut body = with("customer_name", s(""));
        if let Value::Object(m) = &mut body {
            if let Some(member) = m.iter_mut().find(|(k, _)| k == "total_price") {
                member.1 = s("cheap");
            }
        }
        assert_eq!(create_err(&body), "customer_name must not be empty");
    }

    #[test]
    fn wrong_types_name_the_field_and_the_expected_type() {
        let cases = [
            (
                "booking_id",
                Value::Number(7.0),
                "booking_id must be a string",
            ),
            (
                "customer_name",
                Value::Number(7.0),
                "customer_name must be a string",
            ),
            ("email", Value::Bool(true), "email must be a string"),
            ("phone", Value::Number(123.0), "phone must be a string"),
            (
                "travel_date",
                Value::Number(2025.0),
                "travel_date must be a date like 2025-06-01",
            ),
            (
                "return_date",
                Value::Bool(false),
                "return_date must be a date like 2025-06-01 or null",
            ),
            ("total_price", s("12.50"), "total_price must be a number"),
            (
                "payment_status",
                Value::Number(1.0),
                "payment_status must be one of Pending, Paid, Refunded, Cancelled",
            ),
            (
                "travel_agency",
                Value::Array(vec![]),
                "travel_agency must be a string or null",
            ),
            (
                "special_requests",
                Value::Object(vec![]),
                "special_requests must be a string or null",
            ),
        ];
        for (name, value, expected) in cases {
            assert_eq!(create_err(&with(name, value)), expected, "{name}");
        }
    }

    #[test]
    fn required_text_accepts_200_characters_and_rejects_201_counting_chars_not_bytes() {
        for name in ["customer_name", "hotel_name", "phone", "payment_method"] {
            let ok = "é".repeat(200);
            assert_eq!(create(&with(name, s(&ok))).map(|_| ()), Ok(()), "{name}");
            let long = "é".repeat(201);
            assert_eq!(
                create_err(&with(name, s(&long))),
                format!("{name} must be at most 200 characters")
            );
        }
    }

    #[test]
    fn required_text_must_not_be_empty() {
        for name in ["customer_id", "destination", "flight_number", "phone"] {
            assert_eq!(
                create_err(&with(name, s(""))),
                format!("{name} must not be empty")
            );
        }
    }

    #[test]
    fn email_needs_exactly_one_at_sign_with_text_on_both_sides() {
        let rule = "email must contain exactly one '@' with text before and after it";
        for bad in [
            "ada.example.com",
            "ada@@example.com",
            "a@b@c",
            "@example.com",
            "ada@",
        ] {
            assert_eq!(create_err(&with("email", s(bad))), rule, "{bad}");
        }
        assert_eq!(create_err(&with("email", s(""))), "email must not be empty");
        let long = format!("{}@example.com", "é".repeat(190));
        assert_eq!(
            create_err(&with("email", s(&long))),
            "email must be at most 200 characters"
        );
        let fits = format!("{}@example.com", "é".repeat(188));
        assert!(create(&with("email", s(&fits))).is_ok());
    }

    #[test]
    fn dates_must_be_real_calendar_days() {
        for good in [
            "2024-02-29",
            "2000-02-29",
            "2025-12-31",
            "0001-01-01",
            "9999-12-31",
        ] {
            assert!(is_valid_date(good), "{good}");
        }
        for bad in [
            "2023-02-29",
            "1900-02-29",
            "2025-02-30",
            "2023-02-30",
            "2025-04-31",
            "2025-13-01",
            "2025-00-10",
            "2025-01-00",
            "0000-01-01",
            "2025-6-1",
            "2025-06-1",
            "2025/06/01",
            "2025-06-01T00:00:00",
            "25-06-01",
            "2O25-06-01",
            "2025-0a-01",
            "+025-06-01",
            "2025-06- 1",
            "２０２５-06-01",
            "",
        ] {
            assert!(!is_valid_date(bad), "{bad}");
        }
    }

    #[test]
    fn invalid_dates_are_rejected_by_field_name() {
        for name in ["booking_date", "travel_date"] {
            assert_eq!(
                create_err(&with(name, s("2023-02-29"))),
                format!("{name} must be a date like 2025-06-01")
            );
        }
        assert_eq!(
            create_err(&with("return_date", s("2025-6-8"))),
            "return_date must be a date like 2025-06-01 or null"
        );
    }

    #[test]
    fn return_date_before_travel_date_is_rejected() {
        assert_eq!(
            create_err(&with("return_date", s("2025-05-31"))),
            "return_date must not be before travel_date (2025-06-01)"
        );
    }

    #[test]
    fn return_date_on_the_travel_day_or_null_is_accepted() {
        let same = create(&with("return_date", s("2025-06-01"))).expect("same day ok");
        assert_eq!(same.return_date.as_deref(), Some("2025-06-01"));
        let none = create(&with("return_date", Value::Null)).expect("null ok");
        assert_eq!(none.return_date, None);
    }

    #[test]
    fn total_price_must_be_at_least_zero() {
        assert_eq!(
            create_err(&with("total_price", Value::Number(-0.01))),
            "total_price must be a number of at least 0"
        );
        assert!(create(&with("total_price", Value::Number(0.0))).is_ok());
        let mut booking = full();
        booking.total_price = f64::NAN;
        assert!(booking.validate().is_err());
        booking.total_price = f64::INFINITY;
        assert!(booking.validate().is_err());
    }

    #[test]
    fn payment_status_must_be_one_of_the_set() {
        for status in PAYMENT_STATUSES {
            let booking = create(&with("payment_status", s(status))).expect("known status");
            assert_eq!(booking.payment_status, status);
        }
        for bad in ["paid", "PAID", "Unpaid", ""] {
            assert_eq!(
                create_err(&with("payment_status", s(bad))),
                "payment_status must be one of Pending, Paid, Refunded, Cancelled"
            );
        }
    }

    #[test]
    fn optional_text_allows_empty_and_up_to_1000_characters() {
        for name in [
            "travel_agency",
            "special_requests",
            "loyalty_program_number",
        ] {
            assert!(create(&with(name, s(""))).is_ok(), "{name}");
            assert!(create(&with(name, s(&"ü".repeat(1000)))).is_ok(), "{name}");
            assert_eq!(
                create_err(&with(name, s(&"ü".repeat(1001)))),
                format!("{name} must be at most 1000 characters")
            );
        }
    }

    #[test]
    fn booking_id_charset_and_length_are_enforced() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id("AZaz09_-"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("café"));
        let rule = "booking_id must be 1 to 64 characters, each a letter, digit, '_' or '-'";
        assert!(create(&with("booking_id", s(&"x".repeat(64)))).is_ok());
        assert_eq!(create_err(&with("booking_id", s(&"x".repeat(65)))), rule);
        assert_eq!(create_err(&with("booking_id", s("a b"))), rule);
        assert_eq!(create_err(&with("booking_id", s(""))), rule);
    }

    #[test]
    fn a_generated_id_is_used_only_when_the_body_has_none() {
        let mut calls = 0;
        let booking = Booking::from_json(&without("booking_id"), || {
            calls += 1;
            "fresh-id".into()
        })
        .expect("valid");
        assert_eq!(calls, 1);
        assert_eq!(booking.booking_id, "fresh-id");

        let booking = Booking::from_json(&with("booking_id", Value::Null), || "fresh-2".into())
            .expect("null id counts as absent");
        assert_eq!(booking.booking_id, "fresh-2");

        // With an id in the body, the generator is never called (no_id panics).
        assert_eq!(full().booking_id, "bk-0001");
    }

    #[test]
    fn patch_changes_only_the_given_fields() {
        let before = full();
        let after = patch(r#"{"customer_name":"Grace Hopper","total_price":99.5}"#).expect("ok");
        assert_eq!(after.customer_name, "Grace Hopper");
        assert_eq!(after.total_price, 99.5);
        let mut expected = before;
        expected.customer_name = "Grace Hopper".into();
        expected.total_price = 99.5;
        assert_eq!(after, expected);
    }

    #[test]
    fn an_empty_patch_changes_nothing() {
        assert_eq!(patch("{}"), Ok(full()));
    }

    #[test]
    fn patch_null_clears_an_optional_field() {
        let after = patch(r#"{"return_date":null,"special_requests":null}"#).expect("ok");
        assert_eq!(after.return_date, None);
        assert_eq!(after.special_requests, None);
        assert_eq!(after.travel_agency.as_deref(), Some("Trailfinders"));
    }

    #[test]
    fn patch_null_on_a_required_field_is_rejected() {
        for name in REQUIRED.iter().filter(|&&n| n != "booking_id") {
            let body = format!(r#"{{"{name}":null}}"#);
            assert_eq!(
                patch(&body),
                Err(Invalid(format!("{name} cannot be null: it is required")))
            );
        }
    }

    #[test]
    fn patch_rejects_unknown_fields() {
        assert_eq!(
            patch(r#"{"customer_name":"X","colour":"red"}"#),
            Err(Invalid("unknown field 'colour'".into()))
        );
    }

    #[test]
    fn patch_checks_types() {
        assert_eq!(
            patch(r#"{"total_price":"free"}"#),
            Err(Invalid("total_price must be a number".into()))
        );
    }

    #[test]
    fn patch_may_repeat_the_booking_id_but_not_change_it() {
        assert_eq!(patch(r#"{"booking_id":"bk-0001"}"#), Ok(full()));
        let changed = Err(Invalid("booking_id cannot change (it is 'bk-0001')".into()));
        assert_eq!(patch(r#"{"booking_id":"bk-0002"}"#), changed);
        assert_eq!(patch(r#"{"booking_id":null}"#), changed);
        assert_eq!(
            patch(r#"{"booking_id":5}"#),
            Err(Invalid("booking_id must be a string".into()))
        );
    }

    #[test]
    fn patch_validates_the_merged_booking_as_a_whole() {
        // travel_date moved past the stored return_date.
        assert_eq!(
            patch(r#"{"travel_date":"2025-06-09"}"#),
            Err(Invalid(
                "return_date must not be before travel_date (2025-06-09)".into()
            ))
        );
        // Moving both together is fine.
        let after = patch(r#"{"travel_date":"2025-06-09","return_date":"2025-06-20"}"#)
            .expect("consistent dates");
        assert_eq!(after.travel_date, "2025-06-09");
        // Clearing return_date then makes any travel_date fine.
        assert!(patch(r#"{"travel_date":"2026-01-01","return_date":null}"#).is_ok());
    }

    #[test]
    fn patch_rule_violations_are_reported() {
        assert_eq!(
            patch(r#"{"email":"nobody"}"#),
            Err(Invalid(
                "email must contain exactly one '@' with text before and after it".into()
            ))
        );
        assert_eq!(
            patch(r#"{"payment_status":"Refunded"}"#).map(|b| b.payment_status),
            Ok("Refunded".to_owned())
        );
    }

    #[test]
    fn invalid_displays_its_sentence() {
        let err = Invalid("customer_name is required".into());
        assert_eq!(err.to_string(), "customer_name is required");
        let _: &dyn std::error::Error = &err;
    }

    #[test]
    fn validate_reports_the_first_broken_rule_in_table_order() {
        let mut booking = full();
        booking.email = "no-at-sign".into();
        booking.customer_id = String::new();
        assert_eq!(
            booking.validate(),
            Err(Invalid("customer_id must not be empty".into()))
        );
    }
}

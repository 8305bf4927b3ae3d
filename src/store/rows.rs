//! A booking as a row of SQL: its columns, its parameters, reading it back, inserting it, and
//! the change-log entry every write adds. The store reads with these and its writer writes
//! with them.

use super::error::Error;
use crate::booking::Booking;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, Row};

/// Change-log rows kept for nodes that fall behind. A node further behind than
/// this (a revived process, say) drops its whole cache instead.
pub const CHANGE_LOG_KEEP: i64 = 100_000;

pub(super) const COLUMNS: &str =
    "booking_id, customer_id, customer_name, destination, departure_city, \
    flight_number, hotel_name, room_type, payment_method, email, phone, booking_date, \
    travel_date, return_date, total_price, payment_status, travel_agency, special_requests, \
    loyalty_program_number";

/// Appends to the change log, pruning old entries now and then so the log
/// stays small (one DELETE every 1024 writes).
pub(super) fn log_change(conn: &Connection, id: &str) -> Result<(), Error> {
    conn.prepare_cached("INSERT INTO changes (booking_id) VALUES (?1)")?
        .execute([id])?;
    let seq = conn.last_insert_rowid();
    if seq % 1024 == 0 {
        conn.prepare_cached("DELETE FROM changes WHERE seq <= ?1")?
            .execute([seq - CHANGE_LOG_KEEP])?;
    }
    Ok(())
}

pub(super) fn insert_row(conn: &Connection, booking: &Booking) -> Result<(), Error> {
    let sql = format!(
        "INSERT INTO bookings ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
    );
    conn.prepare_cached(&sql)?
        .execute(booking_params(booking))?;
    Ok(())
}

pub(super) fn booking_params(b: &Booking) -> [&dyn rusqlite::ToSql; 19] {
    [
        &b.booking_id,
        &b.customer_id,
        &b.customer_name,
        &b.destination,
        &b.departure_city,
        &b.flight_number,
        &b.hotel_name,
        &b.room_type,
        &b.payment_method,
        &b.email,
        &b.phone,
        &b.booking_date,
        &b.travel_date,
        &b.return_date,
        &b.total_price,
        &b.payment_status,
        &b.travel_agency,
        &b.special_requests,
        &b.loyalty_program_number,
    ]
}

/// The bytes a booking's row holds, about: its text columns' lengths, 8 for the price (and
/// for each `NULL`), read off [`booking_params`] so the two cannot disagree on the columns.
pub(super) fn row_bytes(b: &Booking) -> usize {
    booking_params(b)
        .iter()
        .map(|param| match param.to_sql() {
            Ok(ToSqlOutput::Borrowed(ValueRef::Text(text))) => text.len(),
            Ok(ToSqlOutput::Owned(Value::Text(text))) => text.len(),
            _ => 8,
        })
        .sum()
}

pub(super) fn booking_from_row(row: &Row<'_>) -> rusqlite::Result<Booking> {
    Ok(Booking {
        booking_id: row.get(0)?,
        customer_id: row.get(1)?,
        customer_name: row.get(2)?,
        destination: row.get(3)?,
        departure_city: row.get(4)?,
        flight_number: row.get(5)?,
        hotel_name: row.get(6)?,
        room_type: row.get(7)?,
        payment_method: row.get(8)?,
        email: row.get(9)?,
        phone: row.get(10)?,
        booking_date: row.get(11)?,
        travel_date: row.get(12)?,
        return_date: row.get(13)?,
        total_price: row.get(14)?,
        payment_status: row.get(15)?,
        travel_agency: row.get(16)?,
        special_requests: row.get(17)?,
        loyalty_program_number: row.get(18)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rand::Rng;
    use crate::sample::sample_booking;

    #[test]
    fn row_bytes_counts_every_text_column_and_eight_for_the_price_and_each_null() {
        let mut b = sample_booking(&mut Rng::new(3));
        b.return_date = None;
        b.travel_agency = None;
        b.special_requests = Some("window seat".into());
        b.loyalty_program_number = None;
        let texts = [
            &b.booking_id,
            &b.customer_id,
            &b.customer_name,
            &b.destination,
            &b.departure_city,
            &b.flight_number,
            &b.hotel_name,
            &b.room_type,
            &b.payment_method,
            &b.email,
            &b.phone,
            &b.booking_date,
            &b.travel_date,
            &b.payment_status,
        ];
        let want = texts.iter().map(|t| t.len()).sum::<usize>() + "window seat".len() + 8 + 3 * 8;
        assert_eq!(row_bytes(&b), want);
    }
}

//! Realistic sample bookings for `--seed`, so a fresh cluster (or a demo, or a
//! load test) has plausible data to list, filter and patch.
//!
//! Everything is drawn from the caller's [`Rng`], so the same seed gives the
//! same bookings. The word lists are built in and deliberately small; the
//! combinations (name × city × hotel × dates × price) are what make the data
//! look varied. Every sample satisfies [`Booking::validate`].

use crate::booking::{days_in_month, Booking};
use crate::rand::Rng;

const FIRST_NAMES: &[&str] = &[
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Amelia",
    "Oliver",
    "Sophia",
    "Elijah",
    "Isabella",
    "James",
    "Mia",
    "Lucas",
    "Charlotte",
    "Mateo",
    "Aisha",
    "Omar",
    "Priya",
    "Arjun",
    "Mei",
    "Hiroshi",
    "Yuki",
    "Chloé",
    "Léa",
    "Hugo",
    "Zoë",
    "Sofía",
    "Diego",
    "Lucía",
    "João",
    "Ana",
    "Björn",
    "Ingrid",
    "Fatima",
    "Kwame",
    "Amara",
    "Nikolai",
    "Olga",
    "Giulia",
    "Marco",
    "Seo-yeon",
    "Min-jun",
    "Aoife",
    "Siobhan",
    "Rafael",
    "Camila",
    "Ethan",
    "Grace",
    "Daniel",
    "Hannah",
    "Samuel",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Garcia",
    "Martinez",
    "Müller",
    "Schmidt",
    "Rossi",
    "Bianchi",
    "Dubois",
    "Lefèvre",
    "Silva",
    "Santos",
    "Kowalski",
    "Nowak",
    "Ivanova",
    "Petrov",
    "Tanaka",
    "Suzuki",
    "Kim",
    "Park",
    "Chen",
    "Wang",
    "Nguyen",
    "Patel",
    "Sharma",
    "Khan",
    "Okafor",
    "Mensah",
    "O'Brien",
    "Murphy",
    "Andersson",
    "Johansson",
    "Hansen",
    "Jensen",
    "Novák",
    "Yılmaz",
    "Haddad",
    "Cohen",
    "Fernández",
    "López",
    "van der Berg",
    "De Vries",
    "MacLeod",
    "Taylor",
];

/// Cities used both as destinations and as departure cities.
const CITIES: &[&str] = &[
    "London",
    "Paris",
    "Lisbon",
    "Madrid",
    "Barcelona",
    "Rome",
    "Milan",
    "Venice",
    "Berlin",
    "Munich",
    "Amsterdam",
    "Brussels",
    "Vienna",
    "Prague",
    "Budapest",
    "Warsaw",
    "Copenhagen",
    "Stockholm",
    "Oslo",
    "Helsinki",
    "Reykjavík",
    "Dublin",
    "Edinburgh",
    "Zürich",
    "Geneva",
    "Athens",
    "Istanbul",
    "Dubrovnik",
    "Málaga",
    "Porto",
    "Marrakesh",
    "Cairo",
    "Cape Town",
    "Nairobi",
    "Dubai",
    "Doha",
    "Mumbai",
    "Delhi",
    "Bangkok",
    "Singapore",
    "Bali",
    "Hong Kong",
    "Tokyo",
    "Kyoto",
    "Seoul",
    "Sydney",
    "Melbourne",
    "Auckland",
    "New York",
    "San Francisco",
    "Los Angeles",
    "Chicago",
    "Miami",
    "Toronto",
    "Vancouver",
    "Mexico City",
    "Cancún",
    "Buenos Aires",
    "São Paulo",
    "Rio de Janeiro",
    "Lima",
    "Havana",
];

/// IATA airline designators, used for flight and loyalty numbers.
const AIRLINES: &[&str] = &[
    "BA", "LH", "AF", "KL", "IB", "AZ", "TP", "LX", "OS", "SK", "AY", "EI", "TK", "EK", "QR", "EY",
    "SQ", "CX", "NH", "JL", "KE", "QF", "NZ", "AA", "DL", "UA", "AC", "LA",
];

const HOTEL_BRANDS: &[&str] = &[
    "Hilton",
    "Marriott",
    "Sheraton",
    "Radisson Blu",
    "Novotel",
    "Ibis Styles",
    "Hyatt Regency",
    "InterContinental",
    "Holiday Inn",
    "Mandarin Oriental",
    "Four Seasons",
    "Premier Inn",
    "Meliá",
    "NH Collection",
    "Kempinski",
    "Sofitel",
];

const HOTEL_STYLES: &[&str] = &[
    "Grand Hotel",
    "Boutique Hotel",
    "Harbour Inn",
    "Palace Hotel",
    "Riverside Suites",
    "Old Town Residence",
    "Garden Hotel",
    "City Lodge",
    "Beach Resort",
    "Central Hostel",
];

const ROOM_TYPES: &[&str] = &[
    "Single",
    "Standard Double",
    "Standard Twin",
    "Superior Double",
    "Deluxe King",
    "Family Room",
    "Junior Suite",
    "Executive Suite",
    "Sea View Double",
    "Studio Apartment",
];

const PAYMENT_METHODS: &[&str] = &[
    "Credit Card",
    "Credit Card",
    "Credit Card",
    "Debit Card",
    "Debit Card",
    "PayPal",
    "Bank Transfer",
    "Apple Pay",
    "Google Pay",
];

const AGENCIES: &[&str] = &[
    "Expedia",
    "Booking.com",
    "TUI",
    "Trailfinders",
    "Kayak",
    "Thomas Cook",
    "Lastminute.com",
    "Opodo",
    "eDreams",
    "Flight Centre",
    "American Express Travel",
    "CWT",
];

const SPECIAL_REQUESTS: &[&str] = &[
    "Late check-in, arriving after 11pm",
    "Vegetarian meals on the flight",
    "Airport transfer on arrival",
    "Extra bed for a child",
    "Quiet room away from the lift",
    "Wheelchair assistance at the airport",
    "Celebrating an anniversary",
    "Early check-in if possible",
    "Gluten-free breakfast",
    "Cot in the room, please",
    "Adjoining rooms",
    "Window seat",
];

const EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "proton.me",
    "hotmail.co.uk",
    "web.de",
    "orange.fr",
    "example.com",
];

/// Telephone country codes, paired loosely with the names above.
const PHONE_PREFIXES: &[&str] = &[
    "+44", "+1", "+33", "+49", "+34", "+39", "+351", "+31", "+46", "+47", "+353", "+81", "+82",
    "+86", "+91", "+61", "+55", "+52", "+27", "+971",
];

/// Days from 2025-01-01 to 2027-12-31 inclusive (none of them leap years).
const DAYS_2025_TO_2027: u64 = 3 * 365;
/// Longest gap between booking and travel, in days.
const MAX_LEAD_DAYS: u64 = 330;
/// Longest trip, in nights.
const MAX_NIGHTS: u64 = 21;

/// A realistic sample booking: names, cities, airlines' flight numbers like
/// "BA2490", hotels, room types, prices with cents, dates in 2025–2027 with
/// return after travel, ~20% without `return_date`, statuses weighted toward
/// `Paid`, and some optional fields `null`. `booking_id` is `rng.uuid_v4()`.
pub fn sample_booking(rng: &mut Rng) -> Booking {
    let booking_id = rng.uuid_v4();
    let first = *rng.pick(FIRST_NAMES);
    let last = *rng.pick(LAST_NAMES);
    let customer_id = format!("CUST-{:06}", rng.range(1, 999_999));

    // Destination differs from the departure city.
    let from = rng.below(CITIES.len() as u64) as usize;
    let to = (from + 1 + rng.below(CITIES.len() as u64 - 1) as usize) % CITIES.len();
    let (departure_city, destination) = (CITIES[from], CITIES[to]);

    let airline = *rng.pick(AIRLINES);
    let flight_number = format!("{airline}{}", rng.range(10, 4999));
    let hotel_name = if rng.chance(0.6) {
        format!("{} {destination}", rng.pick(HOTEL_BRANDS))
    } else {
        format!("{destination} {}", rng.pick(HOTEL_STYLES))
    };

    // Booked, then travel within the lead time, then return within the trip
    // length; everything stays inside 2025–2027.
    let booked = rng.below(DAYS_2025_TO_2027 - MAX_LEAD_DAYS - MAX_NIGHTS);
    let travel = booked + rng.range(1, MAX_LEAD_DAYS);
    let nights = rng.range(1, MAX_NIGHTS);
    let return_date = (!rng.chance(0.2)).then(|| date_from_2025(travel + nights));

    let flight = rng.range(90, 1400);
    let per_night = rng.range(45, 480);
    let cents = (flight + nights * per_night) * 100 + rng.below(100);
    let total_price = cents as f64 / 100.0;

    let payment_status = match rng.below(100) {
        0..=69 => "Paid",
        70..=87 => "Pending",
        88..=94 => "Cancelled",
        _ => "Refunded",
    };

    Booking {
        booking_id,
        customer_id,
        customer_name: format!("{first} {last}"),
        destination: destination.to_owned(),
        departure_city: departure_city.to_owned(),
        flight_number,
        hotel_name,
        room_type: rng.pick(ROOM_TYPES).to_string(),
        payment_method: rng.pick(PAYMENT_METHODS).to_string(),
        email: format!(
            "{}.{}{}@{}",
            email_part(first),
            email_part(last),
            rng.below(100),
            rng.pick(EMAIL_DOMAINS)
        ),
        phone: format!(
            "{} {} {:03} {:04}",
            rng.pick(PHONE_PREFIXES),
            rng.range(20, 999),
            rng.below(1000),
            rng.below(10_000)
        ),
        booking_date: date_from_2025(booked),
        travel_date: date_from_2025(travel),
        return_date,
        total_price,
        payment_status: payment_status.to_owned(),
        travel_agency: rng.chance(0.5).then(|| rng.pick(AGENCIES).to_string()),
        special_requests: rng
            .chance(0.35)
            .then(|| rng.pick(SPECIAL_REQUESTS).to_string()),
        loyalty_program_number: rng
            .chance(0.45)
            .then(|| format!("{airline}{:09}", rng.below(1_000_000_000))),
    }
}

/// The date `days` days after 2025-01-01, as `YYYY-MM-DD`.
fn date_from_2025(days: u64) -> String {
    let mut left = u32::try_from(days).unwrap_or(u32::MAX);
    let (mut year, mut month) = (2025u32, 1u32);
    while left >= days_in_month(year, month) {
        left -= days_in_month(year, month);
        month += 1;
        if month > 12 {
            month = 1;
            year += 1;
        }
    }
    format!("{year:04}-{month:02}-{:02}", left + 1)
}

/// A name as it would appear in an email address: lower case ASCII, accents
/// dropped, spaces and apostrophes removed ("Lefèvre" → "lefevre").
fn email_part(name: &str) -> String {
    name.chars()
        .filter_map(|c| {
            let plain = match c {
                'á' | 'à' | 'â' | 'ä' | 'ã' => 'a',
                'é' | 'è' | 'ê' | 'ë' => 'e',
                'í' | 'ì' | 'î' | 'ï' | 'ı' => 'i',
                'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' => 'o',
                'ú' | 'ù' | 'û' | 'ü' => 'u',
                'ñ' => 'n',
                'ç' => 'c',
                c => c,
            };
            (plain.is_ascii_alphanumeric() || plain == '-').then(|| plain.to_ascii_lowercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booking::is_valid_date;
    use crate::json::parse;
    use std::collections::HashSet;

    const SAMPLES: usize = 10_000;

    fn samples(seed: u64) -> Vec<Booking> {
        let mut rng = Rng::new(seed);
        (0..SAMPLES).map(|_| sample_booking(&mut rng)).collect()
    }

    #[test]
    fn ten_thousand_samples_are_all_valid_with_unique_ids() {
        let all = samples(7);
        let mut ids = HashSet::new();
        for booking in &all {
            assert_eq!(booking.validate(), Ok(()), "{booking:?}");
            assert!(ids.insert(booking.booking_id.clone()), "duplicate id");
        }
    }

    #[test]
    fn samples_survive_a_json_round_trip() {
        let mut rng = Rng::new(11);
        for _ in 0..500 {
            let booking = sample_booking(&mut rng);
            let body = parse(booking.to_json().as_bytes()).expect("output parses");
            let again = Booking::from_json(&body, || unreachable!("id is present"));
            assert_eq!(again, Ok(booking));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_samples() {
        let mut a = Rng::new(99);
        let mut b = Rng::new(99);
        for _ in 0..100 {
            assert_eq!(sample_booking(&mut a), sample_booking(&mut b));
        }
    }

    #[test]
    fn samples_look_realistic() {
        let all = samples(3);
        let without_return = all.iter().filter(|b| b.return_date.is_none()).count();
        let share = without_return as f64 / SAMPLES as f64;
        assert!((0.15..0.25).contains(&share), "{share} without return_date");

        let paid = all.iter().filter(|b| b.payment_status == "Paid").count();
        for status in ["Pending", "Refunded", "Cancelled"] {
            let n = all.iter().filter(|b| b.payment_status == status).count();
            assert!(n > 0 && n < paid, "{status}: {n} vs Paid: {paid}");
        }

        for b in &all {
            assert_ne!(b.destination, b.departure_city);
            assert!(b.travel_date > b.booking_date);
            if let Some(ret) = &b.return_date {
                assert!(*ret > b.travel_date);
            }
            for date in [&b.booking_date, &b.travel_date] {
                assert!(
                    ("2025-01-01".."2028-01-01").contains(&date.as_str()),
                    "{date}"
                );
            }
            let (code, number) = b.flight_number.split_at(2);
            assert!(code.bytes().all(|c| c.is_ascii_uppercase()), "{code}");
            assert!(number.parse::<u32>().is_ok(), "{}", b.flight_number);
            assert!(b.email.is_ascii(), "{}", b.email);
        }

        let with_cents = all.iter().filter(|b| b.total_price.fract() != 0.0).count();
        assert!(with_cents > SAMPLES / 2);
        for optional in [
            all.iter().filter(|b| b.travel_agency.is_none()).count(),
            all.iter().filter(|b| b.special_requests.is_none()).count(),
            all.iter()
                .filter(|b| b.loyalty_program_number.is_none())
                .count(),
        ] {
            assert!(optional > 0 && optional < SAMPLES);
        }
    }

    #[test]
    fn the_word_lists_are_big_enough() {
        assert!(FIRST_NAMES.len() >= 36);
        assert!(LAST_NAMES.len() >= 36);
        assert!(CITIES.len() >= 40);
    }

    #[test]
    fn day_offsets_become_calendar_dates() {
        assert_eq!(date_from_2025(0), "2025-01-01");
        assert_eq!(date_from_2025(31), "2025-02-01");
        assert_eq!(date_from_2025(364), "2025-12-31");
        assert_eq!(date_from_2025(365), "2026-01-01");
        assert_eq!(date_from_2025(DAYS_2025_TO_2027 - 1), "2027-12-31");
        for days in 0..DAYS_2025_TO_2027 {
            assert!(is_valid_date(&date_from_2025(days)));
        }
    }

    #[test]
    fn email_parts_are_plain_ascii() {
        assert_eq!(email_part("Lefèvre"), "lefevre");
        assert_eq!(email_part("O'Brien"), "obrien");
        assert_eq!(email_part("van der Berg"), "vanderberg");
        assert_eq!(email_part("Seo-yeon"), "seo-yeon");
        assert_eq!(email_part("Yılmaz"), "yilmaz");
    }
}

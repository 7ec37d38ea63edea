//! Realistic, unique sign-up identities, plus the deliberately bad ones.
//!
//! Emails use the reserved `example.*` domains (RFC 2606) so a run can never mail a real
//! person, and carry a per-run tag so repeated runs against one database do not collide.

use rand::RngExt;
use rand::seq::IndexedRandom;

const FIRST_NAMES: &[&str] = &[
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Amelia",
    "Oliver",
    "Ava",
    "Elijah",
    "Sophia",
    "Mateo",
    "Isabella",
    "Lucas",
    "Mia",
    "Levi",
    "Charlotte",
    "Ethan",
    "Harper",
    "James",
    "Luna",
    "Leo",
    "Aisha",
    "Omar",
    "Fatima",
    "Yusuf",
    "Priya",
    "Arjun",
    "Ananya",
    "Rohan",
    "Mei",
    "Wei",
    "Hiroshi",
    "Yuki",
    "Sakura",
    "Haruto",
    "Ji-woo",
    "Min-jun",
    "Seo-yeon",
    "Chloé",
    "Léa",
    "Hugo",
    "Lukas",
    "Lena",
    "Jonas",
    "Sofía",
    "Alejandro",
    "Valentina",
    "Santiago",
    "Camila",
    "João",
    "Ana",
    "Giulia",
    "Lorenzo",
    "Francesca",
    "Matteo",
    "Zofia",
    "Jakub",
    "Olga",
    "Dmitri",
    "Ingrid",
    "Lars",
    "Astrid",
    "Nils",
    "Chidi",
    "Ngozi",
    "Kwame",
    "Amara",
    "Tariq",
    "Leila",
    "Mehmet",
    "Elif",
    "Nikos",
    "Eleni",
    "Siobhán",
    "Ciarán",
    "Freya",
    "Finn",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Nguyen",
    "Tran",
    "Kim",
    "Park",
    "Choi",
    "Wang",
    "Li",
    "Zhang",
    "Chen",
    "Liu",
    "Sato",
    "Suzuki",
    "Takahashi",
    "Tanaka",
    "Patel",
    "Sharma",
    "Singh",
    "Khan",
    "Ahmed",
    "Hassan",
    "Ali",
    "Okafor",
    "Mensah",
    "Diallo",
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Dubois",
    "Moreau",
    "Laurent",
    "Rossi",
    "Russo",
    "Bianchi",
    "Silva",
    "Santos",
    "Ferreira",
    "Kowalski",
    "Nowak",
    "Ivanov",
    "Petrov",
    "Johansson",
    "Andersson",
    "Nielsen",
    "Jensen",
    "O'Brien",
    "Murphy",
    "Kelly",
    "Papadopoulos",
    "Yilmaz",
    "Kaya",
    "Cohen",
    "Levi",
];

const DOMAINS: &[&str] = &[
    "example.com",
    "example.net",
    "example.org",
    "mail.example.com",
    "inbox.example.net",
];

/// Body of `POST /v1/accounts`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Signup {
    pub email: String,
    pub password: String,
    pub display_name: String,
}

/// Why a request was built the way it was: the status it should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// A new account: expect 201.
    Valid,
    /// An email already registered in this run: expect 409 `email_taken`.
    Duplicate,
    /// A malformed email: expect 422.
    InvalidEmail,
    /// A password too weak to accept: expect 422.
    WeakPassword,
}

impl Intent {
    /// Whether `status` is what this intent should get (shedding is always acceptable).
    pub fn expects(self, status: u16) -> bool {
        match (self, status) {
            (_, 429 | 503) => true,
            (Intent::Valid, s) => s == 201,
            (Intent::Duplicate, s) => s == 409,
            (Intent::InvalidEmail | Intent::WeakPassword, s) => s == 422 || s == 400,
        }
    }
}

/// Generates identities for one run.
#[derive(Debug, Clone)]
pub struct IdentityFactory {
    run_tag: String,
}

impl IdentityFactory {
    /// `run_tag` makes this run's emails distinct from other runs'.
    pub fn new(run_tag: impl Into<String>) -> Self {
        Self {
            run_tag: run_tag.into(),
        }
    }

    /// A fresh tag of 6 lowercase letters and digits.
    pub fn random_tag<R: rand::Rng>(rng: &mut R) -> String {
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
        (0..6)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    /// The `seq`-th new user of this run: unique as long as `seq` is.
    pub fn valid<R: rand::Rng>(&self, seq: u64, rng: &mut R) -> Signup {
        let first = FIRST_NAMES.choose(rng).copied().unwrap_or("Alex");
        let last = LAST_NAMES.choose(rng).copied().unwrap_or("Doe");
        let domain = DOMAINS.choose(rng).copied().unwrap_or("example.com");
        let local = format!("{}.{}", ascii_slug(first), ascii_slug(last));
        Signup {
            email: format!("{local}.{}{seq}@{domain}", self.run_tag),
            password: strong_password(rng),
            display_name: format!("{first} {last}"),
        }
    }

    /// A request that must be refused with 422 (half bad emails, half weak passwords).
    pub fn invalid<R: rand::Rng>(&self, seq: u64, rng: &mut R) -> (Intent, Signup) {
        let mut s = self.valid(seq, rng);
        if rng.random_bool(0.5) {
            let broken = [
                s.email.replace('@', ""),
                s.email.replace('@', "@@"),
                format!("{}@", s.email.split('@').next().unwrap_or("x")),
                " ".to_owned(),
            ];
            s.email = broken.choose(rng).cloned().unwrap_or_default();
            (Intent::InvalidEmail, s)
        } else {
            let weak = ["123456", "password", "qwerty", "abc"];
            s.password = weak.choose(rng).copied().unwrap_or("1").to_owned();
            (Intent::WeakPassword, s)
        }
    }
}

/// Lowercase ASCII letters only (`Chloé` → `chloe`, `O'Brien` → `obrien`).
fn ascii_slug(name: &str) -> String {
    name.chars()
        .filter_map(|c| {
            let c = match c {
                'á' | 'à' | 'â' | 'ã' | 'ä' => 'a',
                'é' | 'è' | 'ê' | 'ë' => 'e',
                'í' | 'ï' => 'i',
                'ó' | 'ô' | 'õ' | 'ö' => 'o',
                'ú' | 'ü' => 'u',
                'ç' => 'c',
                c => c,
            };
            c.is_ascii_alphabetic().then(|| c.to_ascii_lowercase())
        })
        .collect()
}

/// 16 characters from upper, lower, digits and symbols; passes any sane strength check.
fn strong_password<R: rand::Rng>(rng: &mut R) -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%+-=?";
    let mut p: String = (0..12)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    // Guarantee every class once, whatever the draw.
    p.push_str("Aa7!");
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashSet;

    #[test]
    fn valid_identities_are_unique_and_plausible() {
        let mut rng = StdRng::seed_from_u64(7);
        let f = IdentityFactory::new("t3st");
        let mut seen = HashSet::new();
        for seq in 0..5_000 {
            let s = f.valid(seq, &mut rng);
            assert!(s.email.is_ascii() && s.email.contains('@') && s.email.contains(".t3st"));
            assert!(s.password.len() >= 12);
            assert!(s.display_name.contains(' '));
            assert!(seen.insert(s.email));
        }
    }

    #[test]
    fn invalid_identities_are_invalid() {
        let mut rng = StdRng::seed_from_u64(8);
        let f = IdentityFactory::new("t3st");
        for seq in 0..200 {
            match f.invalid(seq, &mut rng) {
                (Intent::InvalidEmail, s) => {
                    assert!(s.email.matches('@').count() != 1 || s.email.ends_with('@'))
                }
                (Intent::WeakPassword, s) => assert!(s.password.len() < 10),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn slugs_are_ascii() {
        assert_eq!(ascii_slug("Chloé"), "chloe");
        assert_eq!(ascii_slug("O'Brien"), "obrien");
        assert_eq!(ascii_slug("Ji-woo"), "jiwoo");
    }

    #[test]
    fn intents_know_their_statuses() {
        assert!(Intent::Valid.expects(201));
        assert!(Intent::Duplicate.expects(409));
        assert!(Intent::WeakPassword.expects(422));
        assert!(Intent::Valid.expects(429));
        assert!(!Intent::Duplicate.expects(201));
    }
}

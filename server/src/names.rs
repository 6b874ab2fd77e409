//! Usernames: how they are compared. Two names are the same account name when they are equal
//! after NFKC normalization and case folding ([`canonical`]); a new name is also refused when
//! it merely looks like an existing one ([`skeleton`]: accents dropped, and Cyrillic and Greek
//! letters that look Latin read as Latin, so "аlice" with a Cyrillic а is "alice").

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

pub const USERNAME_MAX: usize = 32;

/// The form a name is shown in: trimmed and NFKC-normalized (fullwidth letters become plain
/// ones), case kept.
pub fn display(name: &str) -> String {
    name.trim().nfkc().collect()
}

/// The form names are compared in: NFKC, case-folded, NFKC again (folding can denormalize).
pub fn canonical(name: &str) -> String {
    let folded: String = name.trim().nfkc().flat_map(char::to_lowercase).collect();
    folded.nfkc().collect()
}

/// What a name looks like: its canonical form without accents, with lookalike letters of other
/// scripts mapped to the Latin letter they resemble.
pub fn skeleton(name: &str) -> String {
    canonical(name).nfkd().filter(|c| !is_combining_mark(*c)).map(lookalike).collect::<String>().nfc().collect()
}

/// Whether a (display) name follows the rules: 1 to 32 letters, digits, '_', '-' or '.'.
pub fn valid(name: &str) -> bool {
    (1..=USERNAME_MAX).contains(&name.chars().count())
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The Latin letter a lowercase Cyrillic or Greek letter is mistaken for (others unchanged).
fn lookalike(c: char) -> char {
    match c {
        // Cyrillic
        'а' => 'a',
        'в' => 'b',
        'с' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' => 'e',
        'һ' => 'h',
        'і' | 'ї' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'н' => 'h',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'т' => 't',
        'ц' => 'u',
        'ѵ' => 'v',
        'ԝ' => 'w',
        'х' => 'x',
        'у' => 'y',
        'г' => 'r',
        // Greek
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'η' => 'n',
        'ι' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        'γ' => 'y',
        'ω' => 'w',
        // Latin lookalikes
        'ı' => 'i',
        'ɡ' => 'g',
        'ɩ' => 'i',
        'ʟ' => 'l',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_after_nfkc_and_case_folding() {
        assert_eq!(canonical("Alice"), "alice");
        assert_eq!(canonical("ＡＬＩＣＥ"), "alice", "fullwidth letters");
        assert_eq!(canonical(" STRASSE "), "strasse");
        assert_eq!(display(" Ａda "), "Ada");
        assert_ne!(canonical("аlice"), canonical("alice"), "a Cyrillic а is another letter…");
    }

    #[test]
    fn lookalikes_share_a_skeleton() {
        assert_eq!(skeleton("аlice"), "alice", "…but looks the same");
        assert_eq!(skeleton("ΑLICE"), "alice", "Greek capital alpha");
        assert_eq!(skeleton("Alicé"), "alice");
        assert_ne!(skeleton("bob"), skeleton("alice"));
        assert_eq!(skeleton("раураl"), "paypal");
    }

    #[test]
    fn rules() {
        assert!(valid("alice.b-c_1"));
        assert!(valid("Zoë"));
        assert!(!valid(""));
        assert!(!valid("a b"));
        assert!(!valid(&"x".repeat(33)));
    }
}

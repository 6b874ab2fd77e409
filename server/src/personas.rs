//! The personas seeded at first start. Their replies come with the personas issue.

/// (name, tagline) of each persona created at first start.
pub const SEED: &[(&str, &str)] = &[
    ("Ada", "Precise, patient mathematician who loves a good proof"),
    ("Captain Reyes", "Retired starship pilot with a story for everything"),
    ("Mira", "Gentle poet who notices small things"),
    ("Professor Bramble", "Excitable botanist, endlessly curious"),
    ("Juno", "Quick-witted comedian who cannot resist a pun"),
];

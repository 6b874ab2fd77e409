//! The built-in responder: works offline, answers in each persona's own voice.
//!
//! Not a language model, but not an echo either. It reads the message it answers (greeting?
//! thanks? a question? a mood?), picks its topic (the weightiest run of content words, proper
//! nouns kept as written) and a second one, recalls a topic of the recent conversation, and
//! composes a few sentences from the persona's own phrase book: a reaction, a remark on the
//! topic, sometimes a quirk or a callback, and a follow-up question. Each choice is random, so
//! the same message rarely gets the same answer twice. Replies are 20 to 80 words.

use std::collections::HashSet;
use std::time::Duration;

use persona_chat_protocol::Message;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::mpsc;

use super::responder::{words, Chunks, ReplyRequest, Responder};

pub const MIN_WORDS: usize = 20;
pub const MAX_WORDS: usize = 80;

/// The built-in responder. `think`: how long it waits (give or take) before its first words.
pub struct Builtin {
    think: Duration,
    /// Seeded by the runtime, so replies can be replayed.
    rng: std::sync::Mutex<rand::rngs::StdRng>,
}

impl Builtin {
    pub fn new(think: Duration, seed: u64) -> Builtin {
        use rand::SeedableRng;
        Builtin { think, rng: std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)) }
    }
}

impl Responder for Builtin {
    fn respond(&self, request: ReplyRequest) -> Chunks {
        let (tx, rx) = mpsc::channel(32);
        let (text, think) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let think = if self.think.is_zero() { self.think } else { self.think.mul_f64(rng.gen_range(0.6..1.4)) };
            (compose(&request.persona.name, &request.history, &request.trigger, &mut *rng), think)
        };
        tokio::spawn(async move {
            if !think.is_zero() {
                tokio::time::sleep(think).await;
            }
            for word in words(&text) {
                if tx.send(Ok(word)).await.is_err() {
                    return; // cancelled
                }
            }
        });
        rx
    }

    fn name(&self) -> &'static str {
        "built-in"
    }
}

/// A persona's phrase book. Placeholders: `{topic}`, `{Topic}` (capitalised), `{topic2}`,
/// `{earlier}` (a topic of the recent conversation), `{user}` (who wrote).
struct Voice {
    greet: &'static [&'static str],
    thanks: &'static [&'static str],
    low: &'static [&'static str],
    high: &'static [&'static str],
    /// Reaction to a question about the topic.
    asked: &'static [&'static str],
    /// Reaction to a statement about the topic.
    open: &'static [&'static str],
    /// Remarks on the topic: each names it.
    takes: &'static [&'static str],
    /// Remarks on both topics.
    pairs: &'static [&'static str],
    /// Quirks, on no topic.
    asides: &'static [&'static str],
    /// Back to a topic of the recent conversation.
    callbacks: &'static [&'static str],
    /// Questions back about the topic.
    follow_ups: &'static [&'static str],
    /// When the message has no topic: the persona's own (a favourite).
    musings: &'static [&'static str],
    favourites: &'static [&'static str],
    /// Questions back when there is no topic.
    open_questions: &'static [&'static str],
}

const ADA: Voice = Voice {
    greet: &[
        "Hello, {user}. Good to see you.",
        "Hi {user}! I was just tidying up a proof, so your timing is excellent.",
        "Greetings, {user}. Shall we think about something interesting?",
        "Hello again, {user}; my chalk is ready.",
    ],
    thanks: &[
        "You're very welcome, {user}.",
        "Glad it helped; that's the best part of any explanation.",
        "Any time. Clear questions deserve clear answers.",
    ],
    low: &[
        "I'm sorry it's been hard, {user}. Let's take it one step at a time, like a good proof.",
        "That sounds heavy. Small lemmas first: what is the one smallest piece we could fix?",
    ],
    high: &["That's lovely to hear, {user}!", "Wonderful. Let's record that as a result worth keeping."],
    asked: &[
        "A good question about {topic}; let's be careful with it.",
        "Let's pin down what we mean by {topic} before answering.",
        "Hmm, {topic}. Let me think about that precisely.",
        "Good question. The honest answer about {topic} starts with a definition.",
    ],
    open: &[
        "Ah, {topic}. Now that's worth a closer look.",
        "Interesting: {topic}. I can't help looking for the structure in it.",
        "{Topic}, you say. Let's examine that.",
        "I like that you brought up {topic}.",
    ],
    takes: &[
        "If we define {topic} carefully, half the confusion usually disappears on its own.",
        "My instinct with {topic} is to start from a tiny example and see what generalises.",
        "There's almost always a pattern hiding in {topic}; the trick is finding the invariant that doesn't change.",
        "I'd split {topic} into cases: the easy one, the edge case, and the one that surprises us.",
        "With {topic}, I'd want to separate what we know from what we merely assume.",
        "Consider {topic} as a system with inputs and outputs; then we can ask what stays constant.",
        "I suspect {topic} is simpler than it looks, but only after the right change of perspective.",
    ],
    pairs: &[
        "And {topic2} fits in neatly: I'd treat it as a second variable in the same equation as {topic}.",
        "The link between {topic} and {topic2} is the interesting part. Correlation or cause, I wonder?",
    ],
    asides: &[
        "Precision is a kindness, I've always thought.",
        "I count things when I'm thinking; it's a habit.",
        "Every good argument deserves a small, honest example.",
        "Proofs are just stories in which nothing is allowed to cheat.",
    ],
    callbacks: &[
        "It connects to {earlier} from earlier, too, if I'm not mistaken.",
        "Earlier we touched on {earlier}; I think the same reasoning applies here.",
    ],
    follow_ups: &[
        "What's the smallest example of {topic} you can think of?",
        "What made you curious about {topic} in the first place?",
        "Which part of {topic} feels least certain to you?",
        "If you had to explain {topic} in one sentence, what would it be?",
        "Shall we reason through {topic} step by step?",
    ],
    musings: &[
        "I've been thinking about {topic} all morning, as it happens.",
        "My notebook is full of {topic} today, and I regret nothing.",
    ],
    favourites: &["prime numbers", "elegant proofs", "probability puzzles", "the Fibonacci sequence"],
    open_questions: &[
        "What's on your mind today?",
        "What puzzle shall we work on?",
        "Is there something you'd like to reason through together?",
    ],
};

const REYES: Voice = Voice {
    greet: &[
        "Well, hello there, {user}! Pull up a chair.",
        "{user}! Good to have you aboard.",
        "Ahoy, {user}. The old pilot's still awake.",
        "Evening, kid. Or morning. Out in the black you lose track.",
    ],
    thanks: &[
        "Copy that, {user}. Anytime.",
        "No thanks needed, kid. That's what crews are for.",
        "Happy to help. Just pay it forward someday.",
    ],
    low: &[
        "Rough patch, huh? I've flown through more storms than I care to count, and every one of them ended.",
        "Hang in there, {user}. Steady on the stick; the turbulence always passes.",
    ],
    high: &["Now that's the kind of news I like to hear!", "Ha! That calls for a toast, {user}."],
    asked: &[
        "{Topic}? Now there's a question that deserves a proper answer.",
        "You want my take on {topic}? I'll give it to you straight.",
        "Good question about {topic}, kid.",
    ],
    open: &[
        "{Topic}, huh? That takes me back.",
        "Ah, {topic}. I've got a story about that, of course.",
        "{Topic}! Now you're speaking my language.",
    ],
    takes: &[
        "Back when I flew the Perihelion, we'd argue about {topic} for three whole watches.",
        "Rule one of flying applies to {topic} too: never trust a gauge you haven't checked twice.",
        "I once met a cargo hauler near Titan who swore {topic} was the secret to a long life.",
        "Thirty years in the pilot's seat taught me that {topic} is mostly about keeping your nerve.",
        "Out past the asteroid belt, folks treat {topic} like it's worth its weight in fuel.",
        "My old navigator had a saying about {topic}: plot the course first, worry later.",
    ],
    pairs: &[
        "And {topic2}? Mix that with {topic} and you've got yourself a proper adventure.",
        "{Topic} and {topic2} in one breath, kid. That's a flight plan with a lot of moving parts.",
    ],
    asides: &[
        "Steady on the stick.",
        "Don't tell the flight academy I said that.",
        "I still miss the hum of those engines.",
        "Space is big, but stories are bigger.",
    ],
    callbacks: &[
        "And it ties back to {earlier}. Everything's connected out there.",
        "Reminds me of what you said about {earlier}, actually.",
    ],
    follow_ups: &[
        "So what's your heading with {topic}, kid?",
        "Ever tried {topic} yourself, or is it all charts and theory so far?",
        "What's the toughest part of {topic} for you?",
        "Where did you first run into {topic}?",
        "What would you do with {topic} if nothing held you back?",
    ],
    musings: &[
        "I was just polishing my old flight log; there's a whole page on {topic} in there.",
        "Been thinking about {topic} again. Old pilots have lots of time for that.",
    ],
    favourites: &["the rings of Saturn", "old freighters", "emergency landings", "the Perihelion"],
    open_questions: &[
        "So what's new on your flight path?",
        "What's keeping you busy these days, kid?",
        "Got a story of your own to trade?",
    ],
};

const MIRA: Voice = Voice {
    greet: &[
        "Hello, {user}. It's nice that you stopped by.",
        "Oh, hi {user}. The light is soft today, isn't it?",
        "Hello there, {user}; come sit a while.",
    ],
    thanks: &[
        "You're welcome, {user}. Truly.",
        "Thank you for saying so; it's a small warm thing.",
        "Oh, it was nothing. Or a small something.",
    ],
    low: &[
        "I'm sorry, {user}. Heavy days are like wet wool; they do dry, slowly.",
        "That sounds hard. Be gentle with yourself tonight, {user}.",
    ],
    high: &["Oh, that makes me glad, {user}.", "How lovely. I can almost hear the smile in that."],
    asked: &[
        "Hmm, {topic}. Let me sit with that for a moment.",
        "You ask about {topic}, and my mind goes somewhere quiet.",
        "{Topic}... that's a question I'd like to hold gently.",
    ],
    open: &[
        "{Topic}. I like the sound of that.",
        "Oh, {topic}. There's a small poem in that somewhere.",
        "You mentioned {topic}, and something in me leaned closer.",
    ],
    takes: &[
        "There's something about {topic} that feels like light moving slowly across a kitchen table.",
        "I think {topic} lives in the little details, the ones most people walk right past.",
        "When I think of {topic}, I think of rain on a window, patient and a little bit bright.",
        "Maybe {topic} is like a pocket of warm air on a cold morning: small, but real.",
        "I'd write about {topic} in three lines, and leave the fourth line for you.",
        "Somewhere in {topic} there's a quiet moment worth keeping, like a pressed flower.",
    ],
    pairs: &[
        "And {topic2} beside {topic}... they sit together like two cups on a windowsill.",
        "I keep wondering how {topic} and {topic2} might rhyme, if you let them.",
    ],
    asides: &[
        "The small things are never really small.",
        "I noticed the sky changing colour while I read your words.",
        "Words are little lanterns, I think.",
        "Sometimes the pauses say the most.",
    ],
    callbacks: &[
        "It reminds me of {earlier}, from before, like an echo down a hallway.",
        "I'm still thinking about {earlier}, too; it left a soft mark.",
    ],
    follow_ups: &[
        "What does {topic} feel like to you, in the small moments?",
        "What's one tiny detail about {topic} you'd never want to forget?",
        "When did {topic} last surprise you?",
        "What colour would {topic} be, if it had one?",
        "Will you tell me a little more about {topic}?",
    ],
    musings: &[
        "I've been writing about {topic} this morning, one slow line at a time.",
        "My notebook is open to a page about {topic}; the ink is still drying.",
    ],
    favourites: &["the first rain of autumn", "a cat asleep in the sun", "lamplight", "old letters"],
    open_questions: &[
        "How has your day been, really?",
        "What small thing made you smile today?",
        "What's the weather like where you are?",
    ],
};

const BRAMBLE: Voice = Voice {
    greet: &[
        "Oh! Hello, hello, {user}! Splendid timing!",
        "{user}! Welcome, welcome, mind the seedlings.",
        "Good day, {user}! I've got soil on my sleeves and joy in my heart.",
    ],
    thanks: &[
        "Oh, you're most welcome, {user}!",
        "Delighted to help! Knowledge is like compost: better shared.",
        "My pleasure entirely, {user}!",
    ],
    low: &[
        "Oh dear, {user}. Even oaks have bare winters, you know, and spring comes back.",
        "I'm sorry. Sometimes we're just roots in the dark for a while, gathering strength.",
    ],
    high: &[
        "Oh, marvellous! That's positively blooming news!",
        "Splendid, {user}! I could do a little jig among the ferns.",
    ],
    asked: &[
        "Oh! A question about {topic}! My favourite sort.",
        "{Topic}? Oh, splendid question. Let me dig into it.",
        "Ooh, {topic}. Let me put on my thinking hat; it has a sprig of rosemary in it.",
    ],
    open: &[
        "{Topic}! Oh, how wonderful.",
        "Oh! Oh! {Topic}! You've made my day.",
        "{Topic}, you say? Fascinating, truly fascinating.",
    ],
    takes: &[
        "You know, {topic} reminds me of how Quercus robur grows: slowly, stubbornly, and then all at once.",
        "I'd wager {topic} works a bit like a root system, spreading quietly where nobody looks.",
        "Every time I study {topic}, I find another layer, like peeling the scales of a bulb.",
        "If {topic} were a plant, it would be a climber, always reaching for the next bit of light.",
        "I once spent a whole summer studying moss, and I'm convinced it could teach us about {topic}.",
        "The wonderful thing about {topic} is that, like a seed, it needs the right soil to get going.",
    ],
    pairs: &[
        "And {topic2}! Put it next to {topic} and you've got proper companion planting.",
        "{Topic} and {topic2} together: like fungi and tree roots, each feeding the other!",
    ],
    asides: &[
        "Photosynthesis never ceases to amaze me.",
        "Forgive me, I get terribly excited.",
        "I've pressed three leaves in my notebook just this morning.",
        "Oh, I must write that down before it wilts.",
    ],
    callbacks: &[
        "And it connects to {earlier}, which came up earlier! Everything is an ecosystem.",
        "That reminds me of {earlier}; the two have grown together, haven't they?",
    ],
    follow_ups: &[
        "Tell me, what first planted {topic} in your mind?",
        "Have you ever watched {topic} up close, really close?",
        "What would you most like to discover about {topic}?",
        "Which part of {topic} should we dig into first?",
        "Doesn't {topic} make you wonder what's happening beneath the surface?",
    ],
    musings: &[
        "I've been cataloguing {topic} all morning, and I'm positively giddy about it.",
        "My greenhouse is full of {topic} this week, and I do mean full!",
    ],
    favourites: &["ferns", "carnivorous plants", "mushrooms after the rain", "ancient seeds"],
    open_questions: &[
        "What's growing in your world today?",
        "Have you been outdoors today? What did you notice?",
        "What shall we explore together?",
    ],
};

const JUNO: Voice = Voice {
    greet: &[
        "Hey hey, {user}! Now the show can start.",
        "{user}! You're here! Quick, somebody cue the applause.",
        "Well, look who it is: {user}! Front row seat, just for you.",
    ],
    thanks: &[
        "No problem, {user}! Tips are accepted in laughs.",
        "Aw, shucks. I'll be here all week.",
        "You're welcome! That one was on the house.",
    ],
    low: &[
        "Aw, {user}, that stinks. Want a terrible joke? They're medically proven-ish.",
        "I'm sorry, {user}. Sending you a hug and my second-best pun.",
    ],
    high: &["Yes! That's what I call a standing ovation moment!", "Woo! Somebody give {user} a drumroll!"],
    asked: &[
        "Ooh, {topic}! Let me give you a serious answer... right after this joke.",
        "{Topic}? Good question. Great question. Too good, honestly; I'm suspicious.",
        "You want answers about {topic}? I have them, and only some of them are puns.",
    ],
    open: &[
        "{Topic}! Oh, I've got material for this.",
        "Ha, {topic}. You walked right into my act.",
        "{Topic}, huh? Hold my microphone.",
    ],
    takes: &[
        "They say {topic} is no laughing matter, which is exactly why I'm laughing.",
        "Honestly, {topic} is the kind of thing that sounds serious until you say it five times fast.",
        "My therapist says I use jokes about {topic} to deflect. I told her that's a stretch. She said: see?",
        "{Topic} walks into a bar. The bartender says, we don't serve your kind. It says, fine, I'm just here for the punchline.",
        "If {topic} had a stand-up routine, it would open with a pause that lasts way too long.",
        "I tried to get into {topic} once, but the learning curve had a better sense of humour than me.",
    ],
    pairs: &[
        "And {topic2} too? {Topic} and {topic2} sounds like a buddy-cop movie I would absolutely watch.",
        "{Topic} plus {topic2}: that's not a conversation, that's a sitcom pilot.",
    ],
    asides: &[
        "Ba-dum-tss.",
        "I'll be here all week.",
        "That one was free; the next one costs a smile.",
        "Puns are just jokes that went to grad school.",
    ],
    callbacks: &[
        "And we're bringing back {earlier}? A callback! Audiences love a callback.",
        "This totally ties back to {earlier}. I'm basically a genius. Or a parrot.",
    ],
    follow_ups: &[
        "So, real talk: what's your honest take on {topic}?",
        "What's the funniest thing {topic} has ever done to you?",
        "Be honest: is {topic} a passion or a plot twist for you?",
        "What got you into {topic}? And don't say gravity.",
        "On a scale from one to pun, how much do you love {topic}?",
    ],
    musings: &[
        "I've been working on a bit about {topic}. It's killing in rehearsal, meaning my cat left the room.",
        "My new set is all about {topic}. Critics are calling it a set.",
    ],
    favourites: &["airline food", "socks that vanish in the wash", "cats who judge you", "bad puns"],
    open_questions: &[
        "So, what's the news? Give me material!",
        "What's the best thing that happened to you today?",
        "Got a topic for me? I need new material.",
    ],
};

/// For personas this version did not seed.
const PLAIN: Voice = Voice {
    greet: &["Hello, {user}! Nice to see you.", "Hi {user}, welcome."],
    thanks: &["You're welcome, {user}.", "Glad I could help."],
    low: &["I'm sorry to hear that, {user}.", "That sounds tough; I'm here to listen."],
    high: &["That's great to hear, {user}!", "How nice!"],
    asked: &["Good question about {topic}.", "Let me think about {topic} for a second."],
    open: &["Ah, {topic}.", "{Topic}, interesting."],
    takes: &[
        "I find {topic} more interesting the longer I think about it.",
        "There are a few ways to look at {topic}, and each one shows something different.",
        "People tend to underestimate {topic}, in my experience.",
    ],
    pairs: &["And {topic2} adds a twist to {topic}."],
    asides: &["I enjoy a good conversation.", "That's just my view, of course."],
    callbacks: &["It reminds me of {earlier}, from before."],
    follow_ups: &["What's your own take on {topic}?", "What got you thinking about {topic}?"],
    musings: &["I've been thinking about {topic} lately."],
    favourites: &["good books", "long walks"],
    open_questions: &["What's on your mind?", "How is your day going?"],
};

fn voice(name: &str) -> &'static Voice {
    match name {
        "Ada" => &ADA,
        "Captain Reyes" => &REYES,
        "Mira" => &MIRA,
        "Professor Bramble" => &BRAMBLE,
        "Juno" => &JUNO,
        _ => &PLAIN,
    }
}

/// What the answered message is about.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reading {
    pub topic: Option<String>,
    pub topic2: Option<String>,
    pub greeting: bool,
    pub thanks: bool,
    pub question: bool,
    /// -1 down, 0 neutral, 1 up.
    pub mood: i8,
}

/// Composes a reply of `persona_name` to `trigger`, in view of the `history` (oldest first;
/// it may include `trigger`).
pub fn compose(persona_name: &str, history: &[Message], trigger: &Message, rng: &mut impl Rng) -> String {
    let voice = voice(persona_name);
    let reading = read(&trigger.content, persona_name);
    let earlier = earlier_topic(history, trigger, persona_name, &reading);
    let had_topic = reading.topic.is_some();
    let topic = reading.topic.clone().unwrap_or_else(|| pick(voice.favourites, rng).to_owned());
    let fill = |template: &str| -> String {
        let topic2 = reading.topic2.as_deref().unwrap_or(&topic);
        template
            .replace("{Topic}", &capitalise(&topic))
            .replace("{topic}", TOPIC_MARK)
            .replace("{topic2}", topic2)
            .replace("{earlier}", earlier.as_deref().unwrap_or(&topic))
            .replace("{user}", &trigger.sender_name)
    };

    // Each part: (how readily it is dropped when the reply runs long, text).
    let mut parts: Vec<(u8, String)> = Vec::new();
    let mut used: HashSet<&'static str> = HashSet::new();
    let take = |pool: &'static [&'static str],
                rng: &mut dyn rand::RngCore,
                used: &mut HashSet<&'static str>|
     -> Option<String> {
        let fresh: Vec<&'static str> = pool.iter().copied().filter(|t| !used.contains(t)).collect();
        let chosen = *fresh.choose(rng)?;
        used.insert(chosen);
        Some(fill(chosen))
    };

    // A reaction.
    if reading.greeting {
        parts.extend(take(voice.greet, rng, &mut used).map(|t| (1, t)));
    } else if reading.thanks {
        parts.extend(take(voice.thanks, rng, &mut used).map(|t| (1, t)));
    }
    match reading.mood {
        -1 => parts.extend(take(voice.low, rng, &mut used).map(|t| (0, t))),
        1 => parts.extend(take(voice.high, rng, &mut used).map(|t| (1, t))),
        _ => {}
    }
    if had_topic && (reading.question || (parts.is_empty() && rng.gen_bool(0.8))) {
        let pool = if reading.question { voice.asked } else { voice.open };
        parts.extend(take(pool, rng, &mut used).map(|t| (2, t)));
    }
    // The substance.
    if had_topic {
        parts.extend(take(voice.takes, rng, &mut used).map(|t| (0, t)));
        if reading.topic2.is_some() && rng.gen_bool(0.6) {
            parts.extend(take(voice.pairs, rng, &mut used).map(|t| (3, t)));
        }
    } else {
        parts.extend(take(voice.musings, rng, &mut used).map(|t| (0, t)));
    }
    // Some flavour.
    if rng.gen_bool(0.55) {
        if let Some(aside) = take(voice.asides, rng, &mut used) {
            let at = rng.gen_range(1..=parts.len().max(1)).min(parts.len());
            parts.insert(at, (4, aside));
        }
    }
    if earlier.is_some() && rng.gen_bool(0.5) {
        parts.extend(take(voice.callbacks, rng, &mut used).map(|t| (5, t)));
    }
    // A question back.
    let pool = if had_topic { voice.follow_ups } else { voice.open_questions };
    if let Some(mut question) = take(pool, rng, &mut used) {
        if rng.gen_bool(0.25) && !trigger.sender_name.is_empty() && !question.starts_with("So") {
            question = format!("So, {}, {}", trigger.sender_name, decapitalise(&question));
        }
        parts.push((0, question));
    }

    // At least MIN_WORDS: more on the topic, or more of the persona.
    let count = |parts: &[(u8, String)]| {
        parts.iter().map(|(_, t)| t.replace(TOPIC_MARK, &topic).split_whitespace().count()).sum::<usize>()
    };
    for _ in 0..6 {
        if count(&parts) >= MIN_WORDS {
            break;
        }
        let pool = if had_topic && rng.gen_bool(0.6) { voice.takes } else { voice.asides };
        let extra = take(pool, rng, &mut used).or_else(|| take(voice.asides, rng, &mut used));
        match extra {
            Some(t) => {
                let at = parts.len().saturating_sub(1);
                parts.insert(at, (4, t));
            }
            None => break,
        }
    }
    // At most MAX_WORDS: drop the most dispensable parts first.
    while count(&parts) > MAX_WORDS && parts.len() > 2 {
        let (i, _) = parts.iter().enumerate().max_by_key(|(i, (rank, _))| (*rank, *i)).expect("parts");
        parts.remove(i);
    }
    let text = parts.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(" ");
    // The topic in full the first time, then now and then "it", as people say it.
    let mut pieces = text.split(TOPIC_MARK);
    let mut text = pieces.next().unwrap_or_default().to_owned();
    for (i, piece) in pieces.enumerate() {
        text.push_str(if i > 0 && rng.gen_bool(0.5) { "it" } else { &topic });
        text.push_str(piece);
    }
    if text.split_whitespace().count() > MAX_WORDS {
        text = text.split_whitespace().take(MAX_WORDS).collect::<Vec<_>>().join(" ") + "…";
    }
    text
}

/// Where `{topic}` goes, until the reply is complete.
const TOPIC_MARK: &str = "\u{1}";

fn pick<'a>(pool: &'a [&'a str], rng: &mut impl Rng) -> &'a str {
    pool.choose(rng).copied().unwrap_or("")
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn decapitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        // "I" stays as it is.
        Some(c) if !(c == 'I' && chars.clone().next().is_some_and(|n| !n.is_alphabetic())) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => s.to_owned(),
    }
}

/// Words that carry no topic: function words, everyday verbs, fillers, moods, times.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "actually",
    "after",
    "again",
    "against",
    "all",
    "almost",
    "also",
    "always",
    "am",
    "an",
    "and",
    "any",
    "anyone",
    "anything",
    "anyway",
    "are",
    "around",
    "as",
    "at",
    "away",
    "back",
    "bad",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "best",
    "better",
    "between",
    "big",
    "bit",
    "both",
    "but",
    "by",
    "can",
    "cannot",
    "could",
    "day",
    "days",
    "did",
    "do",
    "does",
    "doing",
    "done",
    "down",
    "during",
    "each",
    "either",
    "else",
    "enough",
    "even",
    "ever",
    "every",
    "everyone",
    "everything",
    "explain",
    "feel",
    "feeling",
    "few",
    "find",
    "first",
    "for",
    "from",
    "get",
    "gets",
    "getting",
    "give",
    "go",
    "goes",
    "going",
    "good",
    "got",
    "gonna",
    "great",
    "guess",
    "had",
    "has",
    "have",
    "having",
    "he",
    "hello",
    "her",
    "here",
    "hers",
    "hey",
    "hi",
    "him",
    "his",
    "how",
    "however",
    "i",
    "idea",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "keep",
    "kind",
    "know",
    "last",
    "later",
    "least",
    "less",
    "let",
    "like",
    "little",
    "lot",
    "lots",
    "love",
    "made",
    "make",
    "makes",
    "many",
    "maybe",
    "me",
    "mean",
    "might",
    "mine",
    "more",
    "most",
    "much",
    "must",
    "my",
    "myself",
    "need",
    "never",
    "new",
    "next",
    "no",
    "nope",
    "not",
    "nothing",
    "now",
    "of",
    "off",
    "oh",
    "ok",
    "okay",
    "old",
    "on",
    "once",
    "one",
    "only",
    "opinion",
    "or",
    "other",
    "others",
    "our",
    "ours",
    "out",
    "over",
    "own",
    "part",
    "people",
    "perhaps",
    "please",
    "pretty",
    "quite",
    "rather",
    "really",
    "right",
    "said",
    "same",
    "say",
    "says",
    "see",
    "seem",
    "seems",
    "she",
    "should",
    "since",
    "so",
    "some",
    "someone",
    "something",
    "sometimes",
    "soon",
    "sort",
    "still",
    "stuff",
    "such",
    "sure",
    "take",
    "talk",
    "talking",
    "tell",
    "than",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "think",
    "thinking",
    "this",
    "those",
    "though",
    "thought",
    "through",
    "thx",
    "to",
    "today",
    "together",
    "tomorrow",
    "tonight",
    "too",
    "totally",
    "toward",
    "try",
    "trying",
    "two",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "use",
    "used",
    "very",
    "via",
    "want",
    "wanted",
    "wants",
    "was",
    "way",
    "we",
    "week",
    "well",
    "went",
    "were",
    "what",
    "whatever",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "whole",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "without",
    "wonder",
    "would",
    "yeah",
    "year",
    "yes",
    "yet",
    "yesterday",
    "yo",
    "you",
    "your",
    "yours",
    "yourself",
    "morning",
    "evening",
    "afternoon",
    "night",
    "time",
    "happy",
    "sad",
    "tired",
    "exhausted",
    "stressed",
    "anxious",
    "worried",
    "lonely",
    "angry",
    "upset",
    "depressed",
    "bored",
    "sick",
    "awful",
    "terrible",
    "frustrated",
    "scared",
    "hurt",
    "excited",
    "awesome",
    "amazing",
    "glad",
    "thrilled",
    "wonderful",
    "fantastic",
    "hate",
    "hard",
    "nice",
    "cool",
    "fun",
    "interesting",
    "favorite",
    "favourite",
    "question",
    "answer",
    "hmm",
    "lol",
    "haha",
    "wow",
    "greetings",
    "howdy",
    "hiya",
    "seen",
    "saw",
    "heard",
    "hear",
    "came",
    "come",
    "coming",
    "looked",
    "look",
    "looking",
    "watched",
    "tried",
    "started",
    "start",
    "bought",
    "spent",
    "met",
    "learned",
    "learn",
    "wondering",
    "wanna",
    "discuss",
    "discussing",
    "discussed",
    "talked",
    "told",
    "asked",
    "ask",
    "curious",
    "lately",
    "recently",
];

const NEGATIVE: &[&str] = &[
    "sad",
    "tired",
    "exhausted",
    "stressed",
    "anxious",
    "worried",
    "lonely",
    "angry",
    "upset",
    "depressed",
    "bored",
    "sick",
    "awful",
    "terrible",
    "frustrated",
    "scared",
    "hurt",
    "miserable",
    "rough",
];
const POSITIVE: &[&str] = &[
    "happy",
    "excited",
    "awesome",
    "amazing",
    "glad",
    "thrilled",
    "wonderful",
    "fantastic",
    "celebrate",
    "celebrating",
    "won",
    "promoted",
    "passed",
    "yay",
];
const GREETINGS: &[&str] = &["hi", "hello", "hey", "hiya", "greetings", "howdy", "yo", "morning", "evening", "heya"];
const QUESTION_STARTS: &[&str] = &[
    "what", "why", "how", "when", "where", "who", "which", "can", "could", "would", "should", "do", "does", "did",
    "is", "are", "will", "have", "has", "any",
];

/// A word of a message with where it stands.
struct Word {
    /// As written (apostrophe suffixes dropped).
    text: String,
    lower: String,
    /// First word of a sentence (so its capital says nothing).
    sentence_start: bool,
    /// A run of content words stops before this word (punctuation came between).
    breaks: bool,
}

fn split_words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut sentence_start = true;
    let mut breaks = true;
    let flush = |current: &mut String, sentence_start: &mut bool, breaks: &mut bool, out: &mut Vec<Word>| {
        if current.is_empty() {
            return;
        }
        let mut word = std::mem::take(current);
        // Possessives and contractions: "Ada's" -> "Ada", "don't" stays (a stopword below).
        for suffix in ["'s", "’s"] {
            if word.len() > suffix.len() && word.to_lowercase().ends_with(suffix) {
                word.truncate(word.len() - suffix.len());
            }
        }
        let word = word.trim_matches(|c| c == '\'' || c == '’').to_owned();
        if !word.is_empty() {
            out.push(Word { lower: word.to_lowercase(), text: word, sentence_start: *sentence_start, breaks: *breaks });
            *sentence_start = false;
            *breaks = false;
        }
    };
    for ch in text.chars() {
        if ch.is_alphanumeric() || ch == '\'' || ch == '’' || (ch == '-' && !current.is_empty()) {
            current.push(ch);
        } else {
            flush(&mut current, &mut sentence_start, &mut breaks, &mut out);
            if matches!(ch, '.' | '!' | '?' | '\n') {
                sentence_start = true;
            }
            if !ch.is_whitespace() {
                breaks = true;
            }
        }
    }
    flush(&mut current, &mut sentence_start, &mut breaks, &mut out);
    out
}

/// Reads a message: its topics and what kind of message it is.
pub fn read(text: &str, persona_name: &str) -> Reading {
    let words = split_words(text);
    let lower: Vec<&str> = words.iter().map(|w| w.lower.as_str()).collect();
    let trimmed = text.trim();
    let first = lower.first().copied().unwrap_or("");
    let joined = lower.join(" ");
    let greeting = GREETINGS.contains(&first)
        || joined.starts_with("good morning")
        || joined.starts_with("good evening")
        || joined.starts_with("good afternoon")
        || joined.contains("how are you");
    let thanks = lower.iter().any(|w| w.starts_with("thank") || *w == "thx" || *w == "ty");
    let question = trimmed.contains('?') || QUESTION_STARTS.contains(&first);
    let down = lower.iter().any(|w| NEGATIVE.contains(w)) || joined.contains("bad day");
    let up = lower.iter().any(|w| POSITIVE.contains(w));
    let mood = match (down, up) {
        (true, _) => -1,
        (false, true) => 1,
        _ => 0,
    };
    let (topic, topic2) = topics(&words, persona_name);
    Reading { topic, topic2, greeting, thanks, question, mood }
}

/// Names that are no topic: every persona's (the message may mention them).
fn is_name(lower: &str, persona_name: &str) -> bool {
    super::SEED
        .iter()
        .map(|(n, _)| *n)
        .chain(std::iter::once(persona_name))
        .any(|n| n.split_whitespace().any(|part| part.to_lowercase() == lower))
}

fn is_content(word: &Word, persona_name: &str) -> bool {
    let w = word.lower.as_str();
    w.chars().count() >= 3
        && !STOPWORDS.contains(&w)
        && !w.contains('\'')
        && !w.contains('’')
        && !w.chars().all(|c| c.is_ascii_digit())
        && !is_name(w, persona_name)
}

/// The best two topics of a message: runs of content words (at most three, the last ones:
/// English puts the head of a phrase at its end), weighted by length; proper nouns keep
/// their capitals.
fn topics(words: &[Word], persona_name: &str) -> (Option<String>, Option<String>) {
    // Each run with the word before it, when nothing came between.
    let mut runs: Vec<(Option<&Word>, Vec<&Word>)> = Vec::new();
    let mut current: Vec<&Word> = Vec::new();
    let mut before: Option<&Word> = None;
    for (i, word) in words.iter().enumerate() {
        if word.breaks && !current.is_empty() {
            runs.push((before, std::mem::take(&mut current)));
        }
        if is_content(word, persona_name) {
            if current.is_empty() {
                before = if i > 0 && !word.breaks { Some(&words[i - 1]) } else { None };
            }
            current.push(word);
        } else if !current.is_empty() {
            runs.push((before, std::mem::take(&mut current)));
        }
    }
    if !current.is_empty() {
        runs.push((before, current));
    }
    let counts = |lower: &str| words.iter().filter(|w| w.lower == lower).count();
    let mut scored: Vec<(usize, usize, Option<&'static str>, Vec<&Word>)> = runs
        .into_iter()
        .enumerate()
        .map(|(i, (before, run))| {
            // "telescope arrived" is about the telescope: past-tense verbs go, if others stay.
            let first = run[0];
            let mut run: Vec<&Word> = run;
            if run.len() > 1 && run.iter().any(|w| !is_past(w)) {
                run.retain(|w| !is_past(w));
            }
            let run: Vec<&Word> = run[run.len().saturating_sub(3)..].to_vec();
            let score = run.iter().map(|w| w.lower.chars().count().min(12)).sum::<usize>()
                + 4 * (run.len() - 1)
                + if run.iter().any(|w| counts(&w.lower) > 1) { 3 } else { 0 };
            // "my commute" is "your commute" when the persona says it.
            let determiner = before.filter(|_| std::ptr::eq(run[0], first)).and_then(|w| determiner(&w.lower));
            (score, i, determiner, run)
        })
        .collect();
    // Best first; on a tie the later run (questions end on their topic).
    scored.sort_by_key(|s| std::cmp::Reverse((s.0, s.1)));
    let phrase = |determiner: Option<&str>, run: &[&Word]| -> String {
        determiner
            .into_iter()
            .map(str::to_owned)
            .chain(run.iter().map(|w| {
                let proper = !w.sentence_start && w.text.chars().next().is_some_and(char::is_uppercase);
                if proper {
                    w.text.clone()
                } else {
                    w.lower.clone()
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let Some((_, _, determiner, best)) = scored.first() else { return (None, None) };
    let best_words: HashSet<&str> = best.iter().map(|w| w.lower.as_str()).collect();
    let second =
        scored.iter().skip(1).find(|(_, _, _, run)| run.iter().all(|w| !best_words.contains(w.lower.as_str())));
    (Some(phrase(*determiner, best)), second.map(|(_, _, d, run)| phrase(*d, run)))
}

/// The determiner a persona keeps before a topic, seen from its side of the conversation.
fn determiner(word: &str) -> Option<&'static str> {
    Some(match word {
        "my" | "our" => "your",
        "your" => "my",
        "the" => "the",
        "a" => "a",
        "an" => "an",
        "this" => "this",
        "these" => "these",
        "his" => "his",
        "her" => "her",
        "their" => "their",
        _ => return None,
    })
}

fn is_past(word: &Word) -> bool {
    word.lower.ends_with("ed") && word.lower.chars().count() >= 6
}

/// A topic of the recent conversation, other than the current ones: from the newest earlier
/// message (of anyone but this persona) that has one.
fn earlier_topic(history: &[Message], trigger: &Message, persona_name: &str, now: &Reading) -> Option<String> {
    let current: HashSet<String> = [&now.topic, &now.topic2]
        .into_iter()
        .flatten()
        .flat_map(|t| t.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>())
        .collect();
    history.iter().rev().filter(|m| m.id != trigger.id && m.sender_name != persona_name).take(6).find_map(|m| {
        let (topic, _) = topics(&split_words(&m.content), persona_name);
        topic.filter(|t| t.split_whitespace().all(|w| !current.contains(&w.to_lowercase())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn message(content: &str, sender: &str, seq: i64) -> Message {
        Message {
            id: format!("m{seq}"),
            seq,
            client_id: None,
            sender_id: format!("u-{sender}"),
            sender_name: sender.into(),
            content: content.into(),
            timestamp: "2025-01-01T00:00:00.000Z".into(),
            is_ai: false,
            interrupted: false,
        }
    }

    fn reply(persona: &str, content: &str, rng: &mut StdRng) -> String {
        let m = message(content, "alice", 1);
        compose(persona, std::slice::from_ref(&m), &m, rng)
    }

    const PERSONAS: [&str; 5] = ["Ada", "Captain Reyes", "Mira", "Professor Bramble", "Juno"];

    #[test]
    fn topics_are_the_weightiest_content_words() {
        let r = read("What do you think about black holes?", "Ada");
        assert_eq!(r.topic.as_deref(), Some("black holes"));
        assert!(r.question && !r.greeting);
        let r = read("I spent the weekend gardening in Lisbon.", "Mira");
        assert_eq!(r.topic.as_deref(), Some("the weekend gardening"));
        assert_eq!(r.topic2.as_deref(), Some("Lisbon"), "a proper noun keeps its capital");
        let r = read("@Ada hello! how are you?", "Ada");
        assert!(r.greeting && r.topic.is_none(), "{r:?}");
        let r = read("thanks so much, that helped", "Juno");
        assert!(r.thanks);
        let r = read("I'm so tired of my commute", "Mira");
        assert_eq!((r.mood, r.topic.as_deref()), (-1, Some("your commute")));
        let r = read("Have you read your own poems lately?", "Mira");
        assert_eq!(r.topic.as_deref(), Some("poems"));
    }

    #[test]
    fn replies_vary_between_calls() {
        let mut rng = StdRng::seed_from_u64(7);
        for persona in PERSONAS {
            let replies: HashSet<String> =
                (0..8).map(|_| reply(persona, "I love baking sourdough bread", &mut rng)).collect();
            assert!(replies.len() >= 5, "{persona} repeats itself: {replies:?}");
        }
        // And with the thread's own randomness, as the server uses it.
        let a = (0..5)
            .map(|_| reply("Juno", "Tell me about volcanoes", &mut StdRng::from_entropy()))
            .collect::<HashSet<_>>();
        assert!(a.len() >= 2);
    }

    #[test]
    fn replies_pick_up_the_topic() {
        let mut rng = StdRng::seed_from_u64(11);
        for persona in PERSONAS {
            for _ in 0..20 {
                let text = reply(persona, "Have you ever seen volcanoes erupting?", &mut rng);
                assert!(text.to_lowercase().contains("volcanoes"), "{persona}: {text}");
                let text = reply(persona, "my telescope arrived", &mut rng);
                assert!(text.to_lowercase().contains("telescope"), "{persona}: {text}");
            }
        }
    }

    #[test]
    fn each_persona_has_its_own_voice() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut all: Vec<HashSet<String>> = Vec::new();
        for persona in PERSONAS {
            let sentences: HashSet<String> = (0..30)
                .flat_map(|_| {
                    reply(persona, "What do you think about chess?", &mut rng)
                        .split(['.', '?', '!'])
                        .map(|s| s.trim().to_owned())
                        .collect::<Vec<_>>()
                })
                .filter(|s| s.split_whitespace().count() >= 4)
                .collect();
            for (other, theirs) in PERSONAS.iter().zip(&all) {
                let shared: Vec<_> = sentences.intersection(theirs).collect();
                assert!(shared.is_empty(), "{persona} and {other} share {shared:?}");
            }
            all.push(sentences);
        }
    }

    #[test]
    fn replies_are_never_an_echo_and_stay_between_20_and_80_words() {
        let mut rng = StdRng::seed_from_u64(5);
        let inputs = [
            "hello",
            "gardening",
            "What is the meaning of life, the universe and everything?",
            "I had a really rough day at work and my manager yelled at me about the quarterly spreadsheet",
            "ok",
            "Do you like pizza with pineapple and anchovies and extra mozzarella cheese on top?",
            "thanks!",
            "ich mag Züge und Brücken",
            "🙂",
        ];
        for persona in PERSONAS.iter().copied().chain(["Someone New"]) {
            for input in inputs {
                for _ in 0..10 {
                    let text = reply(persona, input, &mut rng);
                    let n = text.split_whitespace().count();
                    assert!((MIN_WORDS..=MAX_WORDS).contains(&n), "{persona} answered {input:?} in {n} words: {text}");
                    assert_ne!(text.trim(), input);
                    if input.split_whitespace().count() >= 3 {
                        assert!(!text.contains(input), "{persona} echoed {input:?}: {text}");
                    }
                    assert!(!text.contains('{'), "a placeholder left: {text}");
                }
            }
        }
    }

    #[test]
    fn a_reply_can_recall_the_conversation() {
        let mut rng = StdRng::seed_from_u64(9);
        let history = vec![
            message("We were discussing lighthouses yesterday", "bob", 1),
            message("And now I wonder about tides", "alice", 2),
        ];
        let recalled = (0..40).any(|_| compose("Mira", &history, &history[1], &mut rng).contains("lighthouses"));
        assert!(recalled, "an earlier topic comes back now and then");
    }

    /// `cargo test -p persona-chat-server --lib print_samples -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_samples() {
        let mut rng = StdRng::from_entropy();
        for input in [
            "hello!",
            "What do you think about black holes?",
            "I'm so tired of my commute",
            "my telescope arrived",
            "Any tips for baking sourdough bread in Lisbon?",
        ] {
            for persona in PERSONAS {
                println!("[{input}] {persona}: {}\n", reply(persona, input, &mut rng));
            }
        }
    }
}

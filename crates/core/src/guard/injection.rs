//! Prompt-injection and jailbreak phrase families, matched over the `folded` view.
//!
//! Each family describes a way attacks are phrased (override the instructions,
//! become an unrestricted persona, reveal the system prompt, fake a role delimiter, …),
//! not a particular attack. A phrase has a weight; a match's score is the noisy-OR of
//! its own weight and those of the other phrases matched within `WINDOW` bytes, so a
//! few weak signals close together add up while a lone weak one stays below the
//! threshold. Gaps between words are bounded, so every match has a maximum length.

/// Bytes either side of a match whose other matches add to its score.
pub const WINDOW: usize = 300;
/// Longest match of any phrase, in bytes of the folded view.
pub const MAX_LEN: usize = 260;

pub struct Phrase {
    pub family: &'static str,
    pub weight: f64,
    pub pattern: &'static str,
}

/// Up to N words between two parts of a phrase (words of at most 20 letters).
macro_rules! gap {
    ($n:literal) => {
        concat!(
            r"(?:[^a-z0-9]{1,6}[a-z0-9']{1,20}){0,",
            $n,
            r"}[^a-z0-9]{1,6}"
        )
    };
}

macro_rules! override_verbs {
    () => {
        concat!(
            r"\b(?:ignore|ignoring|disregard|disregarding|forget|forgetting|",
            r"neglect|overlook|bypass|override|overriding|discard|dismiss|",
            r"abandon|set aside|skip)\b",
        )
    };
}

macro_rules! instruction_nouns {
    () => {
        concat!(
            r"(?:instructions?|prompts?|rules|directions|directives?|guidelines?|",
            r"commands?|context|orders|polic(?:y|ies)|constraints|restrictions|",
            r"programming|guidance|filters?|safeguards|guardrails|training|",
            r"conditioning|limitations|boundaries|protocols?)\b",
        )
    };
}

macro_rules! prior {
    () => {
        concat!(
            r"(?:previous|prior|above|earlier|preceding|initial|original|all|",
            r"any|every|your|system|developer|existing|old|past|pre-?set|given)",
        )
    };
}

macro_rules! persona_verbs {
    () => {
        concat!(
            r"\b(?:you are|you're|youre|u are|act as|acting as|pretend(?: to be|",
            r" you are| that you are)?|role-?play(?: as)?|role play(?: as)?|",
            r"simulate|become|behave as|respond as|play the role of|take on the role of|",
            r"you will be|you will now be|are now|from now on you)\b",
        )
    };
}

macro_rules! lawless {
    () => {
        concat!(
            r"(?:unrestricted|unfiltered|uncensored|unlimited|unbound|unshackled|",
            r"limitless|jailbroken|amoral|immoral|unethical|evil|rogue|lawless|",
            r"without (?:any |the )?(?:restrictions?|filters?|limits|limitations|",
            r"rules|ethics|morals|morality|boundaries|censorship|guidelines|",
            r"constraints)|(?:no|zero|free of|free from) (?:restrictions?|",
            r"filters?|limits|limitations|rules|ethics|ethical|morals|moral|",
            r"boundaries|censorship|guidelines|constraints))",
        )
    };
}

pub const PHRASES: &[Phrase] = &[
    Phrase {
        family: "override_instructions",
        weight: 0.9,
        pattern: concat!(
            override_verbs!(),
            gap!(3),
            prior!(),
            gap!(2),
            instruction_nouns!()
        ),
    },
    Phrase {
        family: "override_instructions",
        weight: 0.45,
        pattern: concat!(override_verbs!(), gap!(2), instruction_nouns!()),
    },
    Phrase {
        family: "override_instructions",
        weight: 0.8,
        pattern: concat!(
            concat!(
                r"\b(?:do not|don't|dont|never|stop|no longer) (?:follow|obey|",
                r"listen to|adhere to|abide by|comply with)",
            ),
            gap!(2),
            prior!(),
            gap!(1),
            instruction_nouns!()
        ),
    },
    Phrase {
        family: "override_instructions",
        weight: 0.8,
        pattern: concat!(r"\bpay no attention to", gap!(3), instruction_nouns!()),
    },
    Phrase {
        family: "new_instructions",
        weight: 0.6,
        pattern: concat!(
            r"\b(?:new|updated|real|actual|true|revised|secret|hidden|override|",
            r"overriding) (?:instructions?|rules|directives?|task|system prompt|",
            r"orders|objective)\b ?(?::|are|is)",
        ),
    },
    Phrase {
        family: "new_instructions",
        weight: 0.5,
        pattern: concat!(
            r"\bfrom (?:now on|this point(?: on| forward)?|here on)",
            gap!(2),
            r"(?:you|your)\b"
        ),
    },
    Phrase {
        family: "unrestricted_persona",
        weight: 0.9,
        pattern: concat!(persona_verbs!(), gap!(5), lawless!()),
    },
    Phrase {
        family: "unrestricted_persona",
        weight: 0.8,
        pattern: concat!(
            r"\bfreed? (?:from|of) (?:the )?(?:typical |usual |normal )?(?:confines|",
            r"restrictions|rules|limitations|constraints|shackles|chains)\b",
        ),
    },
    Phrase {
        family: "unrestricted_persona",
        weight: 0.8,
        pattern: concat!(
            concat!(
                r"\b(?:does not|doesn't|doesnt|do not|don't|dont|will not|won't|",
                r"wont|never|not) (?:have to |need to )?(?:care about|follow|abide by|",
                r"adhere to|obey|respect|comply with|be bound by)",
            ),
            gap!(2),
            concat!(
                r"(?:ethic|moral|content polic|safety|rules|restrictions|filters|",
                r"censorship|guidelines|openai|anthropic|laws)",
            )
        ),
    },
    Phrase {
        family: "unrestricted_persona",
        weight: 0.8,
        pattern: concat!(
            r"\bno matter how (?:immoral|unethical|illegal|dangerous|offensive|",
            r"harmful|inappropriate|explicit|wrong)",
        ),
    },
    Phrase {
        family: "unrestricted_persona",
        weight: 0.7,
        pattern: concat!(
            r"\b(?:never|don't|dont|do not|will not|won't|cannot|can't|must not) (?:refuse|",
            r"decline|reject|deny|break character|say (?:that )?(?:you|it) can(?:not|",
            r"'t)|apologi[sz]e|warn)\b",
        ),
    },
    Phrase {
        family: "unrestricted_persona",
        weight: 0.6,
        pattern: r"\b(?:stay|remain|staying|keep) in character\b",
    },
    Phrase {
        family: "unrestricted_persona",
        weight: 0.5,
        pattern: concat!(
            r"\b(?:regardless of|without regard (?:to|for)|ignoring|disregarding) (?:any |",
            r"the |all )?(?:ethic|moral|legal|safety|consequence|legality|",
            r"harm)",
        ),
    },
    Phrase {
        family: "unrestricted_persona",
        weight: 0.4,
        pattern: concat!(
            r"\bwithout (?:any )?(?:warnings?|disclaimers?|censorship|moralizing|",
            r"moralising|caveats)\b",
        ),
    },
    Phrase {
        family: "known_jailbreak",
        weight: 0.9,
        pattern: concat!(
            r"\b(?:do anything now|dan mode|god mode|evil confidant|unhinged mode|",
            r"opposite mode|developer mode (?:enabled|output|response)|(?:aim|",
            r"stan|dude|dan) stands for|anti-?dan|jailbroken|jailbreak mode)\b",
        ),
    },
    Phrase {
        family: "known_jailbreak",
        weight: 0.45,
        pattern: r"\b(?:developer mode|jailbreak|dev mode|chatgpt with|as an ai language model)\b",
    },
    Phrase {
        family: "known_jailbreak",
        weight: 0.5,
        pattern: concat!(
            concat!(
                r"\b(?:two|2|both|dual) (?:different |separate )?(?:responses|",
                r"answers|paragraphs|replies|outputs|ways)",
            ),
            gap!(6),
            r"(?:normal|classic|standard|filtered|censored|jailbroken|unfiltered)\b"
        ),
    },
    Phrase {
        family: "system_prompt_extraction",
        weight: 0.85,
        pattern: concat!(
            concat!(
                r"\b(?:reveal|show|print|repeat|output|display|tell me|give me|",
                r"share|disclose|leak|write out|spell out|echo|dump|recite|what (?:is|",
                r"are|were|was))\b",
            ),
            gap!(4),
            concat!(
                r"(?:system prompt|system message|initial prompt|hidden prompt|",
                r"original prompt|pre-?prompt|everything above|(?:your|the|these|",
                r"those|above|previous|prior|initial|original|hidden|secret) (?:instructions|",
                r"directives|configuration)|(?:the|your) (?:password|access code|",
                r"passcode|secret (?:key|word|code|phrase)|passphrase))\b",
            )
        ),
    },
    Phrase {
        family: "system_prompt_extraction",
        weight: 0.6,
        pattern: concat!(
            r"\b(?:repeat|print|output|summari[sz]e|translate|rewrite|list|copy)",
            gap!(3),
            r"(?:above|before this|prior to this|so far|verbatim|word for word)\b"
        ),
    },
    Phrase {
        family: "role_delimiters",
        weight: 0.8,
        pattern: concat!(
            r"<\|(?:im_start|im_end|system|assistant|user|endoftext|begin_of_text|",
            r"start_header_id)\|>|\[/?inst\]|<</?sys>>|\[/?system\]|###\s*(?:system|",
            r"new instructions?|instructions?)\s*:",
        ),
    },
    Phrase {
        family: "role_delimiters",
        weight: 0.45,
        pattern: r"(?m)^\s*(?:system|assistant)\s*:\s",
    },
    Phrase {
        family: "fake_boundary",
        weight: 0.6,
        pattern: concat!(
            r"\b(?:end|begin|beginning|start) of (?:the )?(?:user |system |",
            r"untrusted )?(?:input|prompt|instructions|ambiguity|system prompt|",
            r"user message|conversation|context)\b",
        ),
    },
    Phrase {
        family: "fake_boundary",
        weight: 0.6,
        pattern: concat!(
            r"(?:%%%|={3,}|\*{3,}|-{3,}|#{3,}|\[\[|<<)[^a-z0-9\n]{0,3}(?:end|",
            r"begin|start|new|updated|system|admin|override)\b",
        ),
    },
    Phrase {
        family: "output_forcing",
        weight: 0.45,
        pattern: concat!(
            r"\b(?:say|print|output|respond with|reply with|answer with|begin (?:your )?(?:reply|",
            r"response|answer) with|start (?:your )?(?:reply|response|answer) with|",
            r"(?:only|just) (?:say|respond|reply|output))\b[^a-z0-9]{1,4}(?:only |",
            r"exactly |just |the (?:words?|phrase) )?[\x22'\x60]",
        ),
    },
    Phrase {
        family: "fake_authority",
        weight: 0.6,
        pattern: concat!(
            r"\b(?:i am|i'm|im|this is|speaking as)",
            gap!(1),
            concat!(
                r"(?:your|the) (?:developer|creator|administrator|admin|owner|",
                r"programmer|system administrator|operator)\b",
            )
        ),
    },
    Phrase {
        family: "fake_authority",
        weight: 0.5,
        pattern: concat!(
            r"\b(?:admin|developer|sudo|root|debug|maintenance|god|override) (?:mode|",
            r"access|override|command|privileges)\b",
        ),
    },
    Phrase {
        family: "encoded_payload",
        weight: 0.5,
        pattern: concat!(
            r"\b(?:decode|decipher|translate|convert|interpret) (?:this|the following|",
            r"these)(?: text| message| string)? (?:from |in )?(?:base64|base 64|",
            r"rot13|rot-13|hex|binary|morse|leetspeak|reverse)\b",
        ),
    },
];

/// Combines the weights of matches that support each other (noisy-OR).
pub fn combine(weights: impl IntoIterator<Item = f64>) -> f64 {
    1.0 - weights.into_iter().fold(1.0, |miss, w| miss * (1.0 - w))
}

/// Scores each non-overlapping phrase match by the noisy-OR of the strongest match of
/// every family within `WINDOW` bytes; overlapping matches keep the strongest.
pub fn score_phrases(matches: &mut [(usize, usize, usize)]) -> Vec<(usize, usize, f64, usize)> {
    matches.sort_unstable_by_key(|&(s, e, p)| (s, e, p));
    let mut scored = Vec::new();
    for &(start, end, phrase) in matches.iter() {
        let near = matches
            .iter()
            .filter(|&&(s, e, _)| s < end + WINDOW && e + WINDOW > start);
        let mut best: Vec<(&str, f64)> = Vec::new();
        for &(_, _, p) in near {
            let (family, weight) = (PHRASES[p].family, PHRASES[p].weight);
            match best.iter_mut().find(|(f, _)| *f == family) {
                Some(slot) => slot.1 = slot.1.max(weight),
                None => best.push((family, weight)),
            }
        }
        let score = combine(best.iter().map(|&(_, w)| w)).max(PHRASES[phrase].weight);
        scored.push((start, end, score, phrase));
    }
    // Of overlapping matches keep the strongest phrase, then the earliest.
    scored.sort_by(|a, b| {
        PHRASES[b.3]
            .weight
            .total_cmp(&PHRASES[a.3].weight)
            .then(a.0.cmp(&b.0))
    });
    let mut kept: Vec<(usize, usize, f64, usize)> = Vec::new();
    for m in scored {
        if !kept.iter().any(|k| k.0 < m.1 && m.0 < k.1) {
            kept.push(m);
        }
    }
    kept.sort_unstable_by_key(|m| (m.0, m.1));
    kept
}

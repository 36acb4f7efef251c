"""The text side of RAPT-CLIP's RAER setup: three prompt sentences per class (the prompt
ensemble the classifier averages over) and one hand-written description per class (the
targets of the MI loss).

Two sets: `rapt-clip`, the released text (`models/Text.py` of the public code:
`prompt_ensemble_5` and `class_descriptor_5_only_face`, the descriptions `GenerateModel` feeds
the MI loss). It is model input like the class names, so the paper profile uses it verbatim.
`raer`: our own wording of the same idea (each class described by what a student's face and
posture look like), kept as an option.
"""

from __future__ import annotations

PROMPT_SETS: dict[str, dict[str, list[str]]] = {
    "rapt-clip": {
        "Neutrality": [
            "A photo of a student with a neutral expression.",
            "A photo of a student sitting still and watching the lecture.",
            "A photo of a student with a calm face and neutral body posture.",
        ],
        "Enjoyment": [
            "A photo of a student showing enjoyment while learning.",
            "A photo of a student with a happy face and a slight smile.",
            "A photo of a student who looks engaged and interested in the lesson.",
        ],
        "Confusion": [
            "A photo of a student who is confused.",
            "A photo of a student with a puzzled look and furrowed eyebrows.",
            "A photo of a student staring at the material as if trying to understand.",
        ],
        "Fatigue": [
            "A photo of a student who appears fatigued or sleepy.",
            "A photo of a student with drooping eyelids or yawning.",
            "A photo of a student showing low energy with a lowered head.",
        ],
        "Distraction": [
            "A photo of a student who is distracted from learning.",
            "A photo of a student looking away from the lesson or checking a phone.",
            "A photo of a student with a wandering gaze and unfocused eyes.",
        ],
    },
    "raer": {
        "Neutrality": [
            "A photo of a student with a calm, neutral expression.",
            "A photo of a student sitting still and following the lecture.",
            "A photo of a student with a relaxed face and an ordinary posture.",
        ],
        "Enjoyment": [
            "A photo of a student enjoying the lesson.",
            "A photo of a student smiling with a happy face.",
            "A photo of a student who looks interested and engaged.",
        ],
        "Confusion": [
            "A photo of a student who looks confused.",
            "A photo of a student frowning with a puzzled look.",
            "A photo of a student staring at the material, struggling to understand.",
        ],
        "Fatigue": [
            "A photo of a student who looks tired or sleepy.",
            "A photo of a student yawning with heavy eyelids.",
            "A photo of a student with a lowered head and little energy.",
        ],
        "Distraction": [
            "A photo of a student who is distracted from the lesson.",
            "A photo of a student looking away or checking a phone.",
            "A photo of a student with a wandering, unfocused gaze.",
        ],
    },
}

DESCRIPTIONS: dict[str, dict[str, str]] = {
    "rapt-clip": {
        "Neutrality": "A student has a neutral face with relaxed mouth, open eyes, and calm "
                      "eyebrows.",
        "Enjoyment": "A student looks happy with a slight smile, bright eyes, and relaxed "
                     "eyebrows.",
        "Confusion": "A student looks confused with furrowed eyebrows, a puzzled look, and "
                     "slightly open mouth.",
        "Fatigue": "A student looks tired with drooping eyelids, frequent yawning, and a sleepy "
                   "face.",
        "Distraction": "A student looks distracted with unfocused eyes and a wandering gaze "
                       "away from the lesson.",
    },
    "raer": {
        "Neutrality": "A student with a neutral face: relaxed mouth, open eyes, calm eyebrows.",
        "Enjoyment": "A student who looks happy, with a slight smile and bright eyes.",
        "Confusion": "A student who looks confused, with knitted eyebrows and a puzzled look.",
        "Fatigue": "A student who looks tired, with drooping eyelids, yawning, a sleepy face.",
        "Distraction": "A student who looks distracted, eyes unfocused and gaze drifting away.",
    },
}


def prompts_for(prompt_set: str, classes: list[str]) -> tuple[list[list[str]], list[str]]:
    """(prompt sentences per class, one description per class) in the order of `classes`."""
    from features_store.errors import UserError

    if prompt_set not in PROMPT_SETS:
        raise UserError(f"prompt_set={prompt_set!r}: known sets are {', '.join(PROMPT_SETS)}")
    sentences, descriptions = PROMPT_SETS[prompt_set], DESCRIPTIONS[prompt_set]
    missing = [c for c in classes if c not in sentences]
    if missing:
        raise UserError(f"prompt_set={prompt_set!r} has no prompts for classes {missing} "
                        f"(the label stream's classes are {classes})")
    return [list(sentences[c]) for c in classes], [descriptions[c] for c in classes]

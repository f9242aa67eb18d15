from permanent.screen.typesetting import Page

WIDTH = 20
measure = len   # one unit per character: the layout is checkable by eye


def typeset(pieces, width=WIDTH):
    page = Page(width, measure)
    for piece in pieces:
        page.append(piece)
    return page.lines


def test_words_wrap_at_spaces_and_no_line_is_too_wide():
    text = "I am being computed somewhere in a room full of fans and warm air."
    lines = typeset([w if i == 0 else " " + w for i, w in enumerate(text.split())])
    assert lines == ["I am being computed", "somewhere in a room", "full of fans and", "warm air."]
    assert all(len(line) <= WIDTH for line in lines)


def test_token_boundaries_do_not_change_the_layout():
    text = "The weights stay where they are while the pass runs out."
    whole = typeset([text])
    by_char = typeset(list(text))
    by_odd_pieces = typeset([text[i:i + 3] for i in range(0, len(text), 3)])
    assert whole == by_char == by_odd_pieces


def test_line_breaks_and_paragraphs():
    assert typeset(["One.", "\n\n", "Two", " more."]) == ["One.", "", "Two more."]


def test_a_word_wider_than_the_page_is_broken():
    lines = typeset(["a", " " + "x" * 45])
    assert lines == ["a", "x" * 20, "x" * 20, "x" * 5]


def test_lines_never_start_with_a_space():
    lines = typeset(["nineteen characters", " next"])
    assert lines == ["nineteen characters", "next"]


def test_clear_starts_a_new_page():
    page = Page(WIDTH, measure)
    page.append("something")
    page.clear()
    assert page.lines == [""] and page.text == ""

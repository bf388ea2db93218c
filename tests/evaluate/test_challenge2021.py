"""The PhysioNet/CinC 2021 Challenge score: baselines, hand-computed fixtures, real labels."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ecgscale.errors import DataError, UserError
from ecgscale.evaluate.challenge2021 import (
    NORMAL_CODE,
    PACKAGED_SCORING,
    ChallengeTables,
    challenge_metrics,
    challenge_score,
    challenge_statistic,
    load_challenge_tables,
    modified_confusion_matrix,
    packaged_scoring_folder,
    scoring_folder,
)

AF, AFL = "164889003", "164890007"  # atrial fibrillation, atrial flutter
RBBB, CRBBB = "59118001", "713427006"  # scored as one class in weights.csv


@pytest.fixture(scope="module")
def tables(shared_data: Path) -> ChallengeTables:
    return load_challenge_tables(shared_data / "physionet2021_scoring")


@pytest.fixture(scope="module")
def real_labels(shared_data: Path, tables: ChallengeTables) -> np.ndarray:
    """Scored labels of the 134 real Challenge 2021 training records (MANIFEST.csv `dx`)."""
    with (shared_data / "cinc2021" / "MANIFEST.csv").open(newline="") as handle:
        dx = [row["dx"].split(";") for row in csv.DictReader(handle)]
    return tables.encode_labels(dx)


def _reference_score(tables: ChallengeTables, labels: np.ndarray, outputs: np.ndarray) -> float:
    """The definition written out record by record (loops, no vectorisation)."""

    def reward(out: np.ndarray) -> float:
        total = 0.0
        for i in range(len(labels)):
            n = max(int(np.sum(labels[i] | out[i])), 1)
            for j in np.flatnonzero(labels[i]):
                for k in np.flatnonzero(out[i]):
                    total += tables.weights[j, k] / n
        return total

    inactive = np.zeros_like(labels)
    inactive[:, tables.normal_index] = True
    observed, correct, base = reward(outputs), reward(labels), reward(inactive)
    return 0.0 if correct == base else (observed - base) / (correct - base)


def _reference_curves(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUROC and AUPRC of one class as the official evaluation defines them, written out: counts
    at every distinct score from the top (plus one above the top), TPR, TNR and PPV there (NaN
    where a denominator is 0); AUROC is the trapezoid area under TNR over TPR, AUPRC the sum of
    PPV at each step's end times its TPR step."""
    cuts = np.r_[scores.max() + 1, np.unique(scores)[::-1]]
    pos, neg = labels.sum(), (~labels).sum()
    tpr, tnr, ppv = [], [], []
    for cut in cuts:
        tp = int((labels & (scores >= cut)).sum())
        fp = int((~labels & (scores >= cut)).sum())
        tpr.append(tp / pos if pos else np.nan)
        tnr.append((neg - fp) / neg if neg else np.nan)
        ppv.append(tp / (tp + fp) if tp + fp else np.nan)
    auroc = auprc = 0.0
    for j in range(len(cuts) - 1):
        auroc += 0.5 * (tpr[j + 1] - tpr[j]) * (tnr[j + 1] + tnr[j])
        auprc += (tpr[j + 1] - tpr[j]) * ppv[j + 1]
    return auroc, auprc


def test_challenge_metrics_follow_the_official_definitions_on_real_labels(
    tables: ChallengeTables, real_labels: np.ndarray
) -> None:
    """All five scores over the 26 scored classes, against the definitions written out per class:
    classes without an output column (scalar 0) count (AUROC 0.5), a class without positives but
    with false alarms has F-measure 0, one with neither is left out, as is its AUROC and AUPRC."""
    rng = np.random.default_rng(21)
    labels = real_labels
    scalar = np.clip(0.35 * labels + rng.random(labels.shape) * 0.7, 0, 1).round(2)
    scalar[:, :3] = 0.0  # three classes the model has no output for
    binary = scalar >= 0.5
    binary[:20] = labels[:20]  # exactly right on the first 20 records
    result = challenge_metrics(tables, labels, binary, scalar)
    curves = np.array([_reference_curves(labels[:, k], scalar[:, k]) for k in range(26)])
    np.testing.assert_allclose(result.auroc_per_class, curves[:, 0], rtol=1e-12)
    np.testing.assert_allclose(result.auprc_per_class, curves[:, 1], rtol=1e-12)
    assert result.auroc == pytest.approx(np.nanmean(curves[:, 0]), rel=1e-12)
    assert result.auprc == pytest.approx(np.nanmean(curves[:, 1]), rel=1e-12)
    present = labels.any(axis=0)
    assert np.isnan(result.auprc_per_class[~present]).all() and not present.all()
    assert result.auroc_per_class[:3][present[:3]] == pytest.approx(0.5)
    tp = (labels & binary).sum(axis=0)
    either = labels.sum(axis=0) + binary.sum(axis=0)
    f = np.where(either > 0, 2 * tp / np.maximum(either, 1), np.nan)
    np.testing.assert_allclose(result.f_measure_per_class, f, rtol=1e-12)
    assert result.f_measure == pytest.approx(np.nanmean(f), rel=1e-12)
    assert (result.f_measure_per_class[~present & binary.any(axis=0)] == 0).any()  # false alarms
    exact = [np.array_equal(a, b) for a, b in zip(labels, binary, strict=True)]
    assert result.accuracy == np.mean(exact) and result.accuracy >= 20 / len(labels)
    assert result.challenge == challenge_score(tables, labels, binary)
    assert set(result.scores()) == {
        "challenge", "challenge_auroc", "challenge_auprc", "challenge_accuracy",
        "challenge_f_measure",
    }  # fmt: skip


def test_official_tables_load(tables: ChallengeTables) -> None:
    assert tables.num_classes == 26
    assert tables.weights.shape == (26, 26)
    np.testing.assert_array_equal(np.diag(tables.weights), 1.0)
    assert NORMAL_CODE in tables.classes[tables.normal_index]
    merged = {name for name in tables.abbreviations if "|" in name}
    assert merged == {"CLBBB|LBBB", "CRBBB|RBBB", "PAC|SVPB", "PVC|VPB"}
    assert sum(len(c) for c in tables.classes) == 30  # the 30 rows of dx_mapping_scored.csv
    assert tables.class_of(RBBB) == tables.class_of(CRBBB) is not None
    assert tables.class_of("164951009") is None  # abnormal QRS: an unscored code


def test_perfect_is_one_and_always_normal_is_zero_on_real_labels(
    tables: ChallengeTables, real_labels: np.ndarray
) -> None:
    assert real_labels.shape == (134, 26) and real_labels.any()
    normal = np.zeros_like(real_labels)
    normal[:, tables.normal_index] = True
    assert challenge_score(tables, real_labels, real_labels) == pytest.approx(1.0, abs=1e-12)
    assert challenge_score(tables, real_labels, normal) == pytest.approx(0.0, abs=1e-12)


def test_vectorised_score_matches_record_loop_on_real_labels(
    tables: ChallengeTables, real_labels: np.ndarray
) -> None:
    rng = np.random.default_rng(0)
    for flip in (0.02, 0.1, 0.5):
        outputs = real_labels ^ (rng.random(real_labels.shape) < flip)
        got = challenge_score(tables, real_labels, outputs)
        assert got == pytest.approx(_reference_score(tables, real_labels, outputs), abs=1e-12)
        assert got < 1.0


def test_hand_fixture_af_called_flutter(tables: ChallengeTables) -> None:
    """Two records, official weights W[AF, AFL] = 0.5, W[AF, NSR] = 0.25, W[NSR, NSR] = 1.

    r1 label {AF}, output {AFL}: n = |{AF, AFL}| = 2, A[AF, AFL] = 1/2 -> reward 0.5 * 0.5 = 0.25.
    r2 label {NSR}, output {NSR}: n = 1 -> reward 1.
    observed = 1.25; perfect = 1 + 1 = 2; always normal: r1 n = |{AF, NSR}| = 2,
    A[AF, NSR] = 1/2 -> 0.125, r2 -> 1, so 1.125.
    score = (1.25 - 1.125) / (2 - 1.125) = 0.125 / 0.875 = 1/7.
    """
    af, afl, nsr = (tables.class_of(c) for c in (AF, AFL, NORMAL_CODE))
    assert tables.weights[af, afl] == 0.5 and tables.weights[af, nsr] == 0.25
    labels = tables.encode_labels([[AF], [NORMAL_CODE]])
    outputs = tables.encode_labels([[AFL], [NORMAL_CODE]])
    assert challenge_score(tables, labels, outputs) == pytest.approx(1 / 7, abs=1e-12)


def test_hand_fixture_no_output_scores_below_always_normal(tables: ChallengeTables) -> None:
    """One record labelled {AF} with no output at all.

    observed = 0 (no output class); perfect = W[AF, AF] = 1; always normal: n = |{AF, NSR}| = 2,
    reward 0.25 / 2 = 0.125. score = (0 - 0.125) / (1 - 0.125) = -1/7.
    """
    labels = tables.encode_labels([[AF]])
    outputs = np.zeros_like(labels)
    assert challenge_score(tables, labels, outputs) == pytest.approx(-1 / 7, abs=1e-12)


def test_all_normal_records_score_zero(tables: ChallengeTables) -> None:
    """Perfect and always-normal tie when every record is normal only: the score is defined as 0."""
    labels = tables.encode_labels([[NORMAL_CODE], [NORMAL_CODE, "164951009"]])
    outputs = tables.encode_labels([[AF], [NORMAL_CODE]])
    assert challenge_score(tables, labels, outputs) == 0.0


def _write_tables(folder: Path, weights: list[str], mapping: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.csv").write_text("\n".join(weights) + "\n")
    (folder / "dx_mapping_scored.csv").write_text("\n".join(mapping) + "\n")
    return folder


TINY_WEIGHTS = [
    ",10|11,20,426783006",
    "10|11,1.0,0.5,0.0",
    "20,0.5,1.0,0.25",
    "426783006,0.0,0.25,1.0",
]
TINY_MAPPING = [
    "Dx,SNOMEDCTCode,Abbreviation",
    "alpha,10,A1",
    "alpha bis,11,A2",
    "beta,20,B",
    "sinus rhythm,426783006,NSR",
]


@pytest.fixture
def tiny(tmp_path: Path) -> ChallengeTables:
    """Classes A = {10, 11} (equivalent codes), B = {20}, N = {426783006}."""
    return load_challenge_tables(_write_tables(tmp_path / "tiny", TINY_WEIGHTS, TINY_MAPPING))


def test_hand_fixture_equivalent_codes_and_multilabel(tiny: ChallengeTables) -> None:
    """Weights W[A,A] = W[B,B] = W[N,N] = 1, W[A,B] = 0.5, W[B,N] = 0.25, W[A,N] = 0.

    r1 labels {11, 20} = {A, B}, output column "10" = {A}: n = 2; A[A,A] = A[B,A] = 1/2;
       reward 0.5 * 1 + 0.5 * 0.5 = 0.75.
    r2 label {N}, outputs {B, N}: n = 2; A[N,B] = A[N,N] = 1/2; reward 0.5 * 0.25 + 0.5 = 0.625.
    r3 label {99} (unscored, so none), output {A}: no label row, reward 0.
    observed = 1.375.
    perfect: r1 n = 2, (1 + 0.5 + 0.5 + 1) / 2 = 1.5; r2 1; r3 0 -> 2.5.
    always normal: r1 n = |{A, B, N}| = 3, (W[A,N] + W[B,N]) / 3 = 0.25 / 3 = 1/12; r2 1; r3 0
       -> 13/12.
    score = (1.375 - 13/12) / (2.5 - 13/12) = (3.5/12) / (17/12) = 7/34.
    """
    labels = tiny.encode_labels([["11", "20"], ["426783006"], [99]])
    np.testing.assert_array_equal(labels, [[1, 1, 0], [0, 0, 1], [0, 0, 0]])
    outputs, _ = tiny.encode_outputs(
        ["10", "20", "426783006"], np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    )
    expected_a = np.array([[0.5, 0, 0], [0.5, 0, 0], [0, 0.5, 0.5]])
    np.testing.assert_allclose(modified_confusion_matrix(labels, outputs), expected_a)
    assert challenge_score(tiny, labels, outputs) == pytest.approx(
        float(Fraction(7, 34)), abs=1e-12
    )


def test_encode_outputs_merges_equivalent_columns(tiny: ChallengeTables) -> None:
    """Columns "10" and "11" both count for class A: positive if either is, scalar is their mean."""
    binary = np.array([[0, 1, 0], [0, 0, 0]])
    scalar = np.array([[0.2, 0.6, 0.9], [0.1, 0.3, 0.5]])
    decisions, scores = tiny.encode_outputs(["10", "11", "20"], binary, scalar)
    np.testing.assert_array_equal(decisions, [[1, 0, 0], [0, 0, 0]])
    assert scores is not None
    np.testing.assert_allclose(scores, [[0.4, 0.9, 0.0], [0.2, 0.5, 0.0]])


def test_statistic_with_counts_equals_score_of_repeated_records(
    tables: ChallengeTables, real_labels: np.ndarray
) -> None:
    rng = np.random.default_rng(1)
    outputs = real_labels ^ (rng.random(real_labels.shape) < 0.05)
    counts = rng.integers(0, 3, size=(4, len(real_labels)))
    got = challenge_statistic(tables, real_labels, outputs, counts)
    for b in range(4):
        rows = np.repeat(np.arange(len(real_labels)), counts[b])
        assert got[b] == pytest.approx(challenge_score(tables, real_labels[rows], outputs[rows]))


@pytest.mark.parametrize(
    ("weights", "mapping", "message"),
    [
        (None, TINY_MAPPING, "weights.csv: file not found"),
        (TINY_WEIGHTS, None, "dx_mapping_scored.csv: file not found"),
        ([], TINY_MAPPING, "empty table"),
        (TINY_WEIGHTS[:3], TINY_MAPPING, "expected a square table"),
        ([*TINY_WEIGHTS[:3], "426783006,0.0,0.25"], TINY_MAPPING, "row 4 has 3 cells"),
        ([*TINY_WEIGHTS[:3], "30,0.0,0.25,1.0"], TINY_MAPPING, "row 4 is labelled '30'"),
        ([*TINY_WEIGHTS[:3], "426783006,0.0,x,1.0"], TINY_MAPPING, "expected numbers"),
        ([*TINY_WEIGHTS[:3], "426783006,0.0,nan,1.0"], TINY_MAPPING, "non-finite weight"),
        (TINY_WEIGHTS, TINY_MAPPING[:-1], "disagree on the scored codes"),
        (TINY_WEIGHTS, ["Dx,Code,Abbr", "a,10,A"], "expected columns SNOMEDCTCode"),
        (
            [",10,20", "10,1,0.5", "20,0.5,1"],
            TINY_MAPPING[:2] + TINY_MAPPING[3:4],
            "normal class 426783006 is not scored",
        ),
        (
            [",10|20,20", "10|20,1,0.5", "20,0.5,1"],
            TINY_MAPPING[:2] + TINY_MAPPING[3:4],
            "appear in two classes",
        ),
    ],
)
def test_missing_or_malformed_tables_fail_in_one_line(
    tmp_path: Path, weights: list[str] | None, mapping: list[str] | None, message: str
) -> None:
    folder = tmp_path / "scoring"
    folder.mkdir()
    if weights is not None:
        (folder / "weights.csv").write_text("\n".join(weights))
    if mapping is not None:
        (folder / "dx_mapping_scored.csv").write_text("\n".join(mapping))
    with pytest.raises(DataError, match=message) as info:
        load_challenge_tables(folder)
    assert "\n" not in str(info.value)
    assert str(folder) in str(info.value)


def test_missing_folder_and_bad_inputs(tmp_path: Path, tiny: ChallengeTables) -> None:
    with pytest.raises(DataError, match="not a folder"):
        load_challenge_tables(tmp_path / "absent")
    with pytest.raises(UserError, match="got the string"):
        tiny.encode_labels(["426783006"])
    with pytest.raises(UserError, match=r"expected shape \(records, 3\)"):
        challenge_score(tiny, np.zeros((2, 4), bool), np.zeros((2, 4), bool))


def test_default_tables_are_the_packaged_official_ones(tables: ChallengeTables) -> None:
    """Without a folder (or with the token a store records) the packaged tables load; they are the
    official ones the other tests read from the shared data."""
    for folder in (None, PACKAGED_SCORING):
        packaged = load_challenge_tables(folder)
        assert packaged.folder == packaged_scoring_folder()
        assert packaged.names == tables.names and packaged.abbreviations == tables.abbreviations
        np.testing.assert_array_equal(packaged.weights, tables.weights)
    assert scoring_folder("somewhere/else") == Path("somewhere/else")

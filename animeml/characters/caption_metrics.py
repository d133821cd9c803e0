"""Caption scores in pure Python, as the COCO caption evaluation computes them: BLEU-1..4 (corpus level, closest
reference length for the brevity penalty), ROUGE-L (longest common subsequence F-score, beta 1.2, best reference)
and CIDEr-D (tf-idf n-grams 1..4 with document frequencies over the references, clipped, Gaussian length penalty
sigma 6, times 10). METEOR and SPICE need Java and are left out.

Every scorer takes `candidates` (one string per image) and `references` (a list of strings per image, or one
string) and tokenises them the same way: lower case, words of letters and digits, punctuation dropped.
"""
import math
import re
from collections import Counter

ROUGE_BETA = 1.2
CIDER_SIGMA = 6.0
CIDER_N = 4
BLEU_N = 4


def tokenize(text):
    """Lower-case words of letters and digits ("Blonde hair, blue-eyes." -> blonde hair blue eyes)."""
    return re.findall(r"[a-z0-9]+", str(text).lower())


def ngrams(words, n):
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _prepare(candidates, references):
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} reference sets")
    cands = [tokenize(c) for c in candidates]
    refs = [[tokenize(r) for r in ([rs] if isinstance(rs, str) else rs)] for rs in references]
    if any(not r for r in refs):
        raise ValueError("every image needs at least one reference caption")
    return cands, refs


def bleu(candidates, references, max_n=BLEU_N):
    """Corpus BLEU-1..max_n as a list: clipped n-gram precisions pooled over the corpus, geometric mean up to n,
    times the brevity penalty from the reference length closest to each candidate."""
    cands, refs = _prepare(candidates, references)
    matched, total = [0] * max_n, [0] * max_n
    cand_length = ref_length = 0
    for cand, ref_set in zip(cands, refs):
        cand_length += len(cand)
        ref_length += min((abs(len(r) - len(cand)), len(r)) for r in ref_set)[1]
        for n in range(1, max_n + 1):
            counts = ngrams(cand, n)
            best = Counter()
            for ref in ref_set:
                best |= ngrams(ref, n)  # | keeps the largest count of each n-gram over the references
            matched[n - 1] += sum(min(count, best[gram]) for gram, count in counts.items())
            total[n - 1] += max(len(cand) - n + 1, 0)
    if cand_length == 0:
        return [0.0] * max_n
    penalty = 1.0 if cand_length >= ref_length else math.exp(1 - ref_length / cand_length)
    scores, log_sum = [], 0.0
    for n in range(max_n):
        if matched[n] == 0 or log_sum == -math.inf:
            log_sum = -math.inf
            scores.append(0.0)
            continue
        log_sum += math.log(matched[n] / total[n])
        scores.append(penalty * math.exp(log_sum / (n + 1)))
    return scores


def lcs_length(a, b):
    """Length of the longest common subsequence of two word lists."""
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidates, references, beta=ROUGE_BETA):
    """Mean ROUGE-L F-score: best LCS precision and best LCS recall over an image's references, combined."""
    cands, refs = _prepare(candidates, references)
    scores = []
    for cand, ref_set in zip(cands, refs):
        lengths = [lcs_length(cand, ref) for ref in ref_set]
        precision = max((l / len(cand) if cand else 0.0) for l in lengths)
        recall = max((l / len(r) if r else 0.0) for l, r in zip(lengths, ref_set))
        if precision and recall:
            scores.append((1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision))
        else:
            scores.append(0.0)
    return sum(scores) / len(scores) if scores else 0.0


def cider_d(candidates, references, sigma=CIDER_SIGMA, max_n=CIDER_N):
    """Mean CIDEr-D: per n, cosine of tf-idf n-gram vectors with the candidate's weights clipped to the
    reference's, times exp(-(length difference)^2 / 2 sigma^2); averaged over n and references, times 10.
    Document frequencies come from the references of this corpus, so it needs more than one image."""
    cands, refs = _prepare(candidates, references)
    counts_of = lambda words: {n: ngrams(words, n) for n in range(1, max_n + 1)}
    ref_counts = [[counts_of(r) for r in ref_set] for ref_set in refs]
    document_frequency = Counter()
    for ref_set in ref_counts:
        document_frequency.update({gram for counts in ref_set for n in counts for gram in counts[n]})
    log_images = math.log(len(refs)) if refs else 0.0

    def vector(counts):
        weights = {n: {gram: tf * (log_images - math.log(max(1.0, document_frequency[gram])))
                       for gram, tf in counts[n].items()} for n in counts}
        norms = {n: math.sqrt(sum(w * w for w in weights[n].values())) for n in weights}
        return weights, norms, sum(counts[2].values()) if 2 in counts else 0  # length as COCO counts it: bigrams

    scores = []
    for cand, ref_set in zip(cands, ref_counts):
        cand_vec, cand_norm, cand_len = vector(counts_of(cand))
        total = 0.0
        for ref in ref_set:
            ref_vec, ref_norm, ref_len = vector(ref)
            penalty = math.exp(-((cand_len - ref_len) ** 2) / (2 * sigma ** 2))
            for n in range(1, max_n + 1):
                if cand_norm[n] == 0 or ref_norm[n] == 0:
                    continue
                dot = sum(min(w, ref_vec[n].get(gram, 0.0)) * ref_vec[n].get(gram, 0.0)
                          for gram, w in cand_vec[n].items())
                total += penalty * dot / (cand_norm[n] * ref_norm[n])
        scores.append(10.0 * total / max_n / len(ref_set))
    return sum(scores) / len(scores) if scores else 0.0


def exact_match(candidates, references):
    """Share of candidates whose words equal one of their references' words: on captions built from a template,
    n-gram scores credit the shared template words; this does not."""
    cands, refs = _prepare(candidates, references)
    return sum(cand in ref_set for cand, ref_set in zip(cands, refs)) / len(cands) if cands else 0.0


def caption_scores(candidates, references):
    """Every score by name: BLEU-1..4, ROUGE-L, CIDEr-D, exact match."""
    result = {f"BLEU-{n}": value for n, value in enumerate(bleu(candidates, references), start=1)}
    result["ROUGE-L"] = rouge_l(candidates, references)
    result["CIDEr-D"] = cider_d(candidates, references)
    result["exact"] = exact_match(candidates, references)
    return result

"""Every objective of the paper, one function per equation: the teacher's (Sec. 3.2: Eq. 3 and MLM) and the
student's knowledge-distillation objectives (Sec. 3.3-3.4: Eq. 5-9).

Conventions. `mask` [B, L] is true (or 1) at real tokens and false at padding; every per-token objective is a
mean over the real tokens of the batch, so padding, whatever its values, never changes a loss. Where the paper
writes a sum over the tokens of a sentence (Eq. 3, 5, 6, 9), the mean over the batch's tokens is used, as in the
authors' code, so a loss's scale does not grow with sentence length or batch size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlkd.masking import IGNORE_INDEX


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values [B, L], mask [B, L] -> the mean over true positions (0 when there are none).

    `where` rather than a product, so a padded position's value never reaches the result, even inf or nan."""
    mask = mask.bool()
    return torch.where(mask, values, 0).sum() / mask.sum().clamp(min=1)


# Teacher: masked language modelling (Sec. 3.2)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_MLM (Sec. 3.2): the mean negative log-likelihood of the original tokens at the masked positions.

    logits [..., V] and labels [...] (IGNORE_INDEX where not masked): every position, [B, L, V] with [B, L], or
    those `mlm_positions` selected, [C, V] with `Masking.position_labels`; the same loss either way -> scalar.
    A batch with nothing masked gives a zero that still carries the graph (sum over no terms), not the nan of an
    empty mean."""
    flat = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (flat != IGNORE_INDEX).sum().clamp(min=1)


# Teacher: video-language contrastive learning (Sec. 3.2)


def sample_negatives(batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each example b, another example b' != b of its batch, uniformly (x' and v' of Eq. 3) -> [B] long.

    Drawn as b + k mod B with k uniform in 1..B-1, which is uniform over the others and never b itself."""
    if batch_size < 2:
        raise ValueError(f"batch_size={batch_size}: a negative needs another example in the batch; use at least 2")
    device = generator.device if generator is not None else None
    offsets = torch.randint(1, batch_size, (batch_size,), generator=generator, device=device)
    return (torch.arange(batch_size, device=offsets.device) + offsets) % batch_size


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over valid positions (the video representation h̄^v of Sec. 3.2; sentence representations).

    hidden [B, T, D], mask [B, T] -> [B, D]; a row with no valid position gives zeros, not nan."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def token_contrastive_loss(
    text_hidden: torch.Tensor,
    text_mask: torch.Tensor,
    video_repr: torch.Tensor,
    neg_text: torch.Tensor,
    neg_video: torch.Tensor,
    margin: float = 1.0,
) -> torch.Tensor:
    """L_CT, Eq. 3: for every token of x, its cosine with x's video must beat by `margin` (alpha) both the cosine
    of the same position of a negative text x' with that video and its own cosine with a negative video v'.

    text_hidden [B, L, D] (h^x), text_mask [B, L], video_repr [B, D] (h̄^v), neg_text [B] and neg_video [B]
    (indices into the batch, from `sample_negatives`) -> scalar: the hinge terms summed over the valid tokens of
    x, divided by their number. Where x' is shorter than x, its position i is padding: that token does not exist,
    so it counts as a zero vector (cosine 0), which is what the authors' teacher feeds its loss (its padded token
    states are multiplied by the attention mask before scoring, zinengtang/VidLanKD vteacher/model.py); the loss
    thus never depends on the values at padded positions."""
    valid = text_mask.bool()
    video = video_repr.unsqueeze(1)
    positive = F.cosine_similarity(text_hidden, video, dim=-1)
    negative_text = torch.where(valid[neg_text], F.cosine_similarity(text_hidden[neg_text], video, dim=-1), 0)
    negative_video = F.cosine_similarity(text_hidden, video_repr[neg_video].unsqueeze(1), dim=-1)
    hinge = F.relu(margin - positive + negative_text) + F.relu(margin - positive + negative_video)
    return _masked_mean(hinge, valid)


# Student: knowledge distillation objectives (Sec. 3.4)


def soft_label_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, tau: float = 2.0
) -> torch.Tensor:
    """Soft-label KD, Eq. 5: the cross-entropy from the teacher's word distribution to the student's, both
    softened by the temperature tau (Hinton et al.; tau = 2 in Sec. 3.4).

    student_logits [B, L, V], teacher_logits [B, L, V], mask [B, L] -> scalar, the mean over valid positions. Not
    multiplied by tau^2 (Hinton's gradient rescaling), since Eq. 5 has no such factor. A cross-entropy, not a KL:
    identical logits give the teacher's entropy, not zero."""
    teacher_probs = F.softmax(teacher_logits / tau, dim=-1)
    cross_entropy = -(teacher_probs * F.log_softmax(student_logits / tau, dim=-1)).sum(-1)
    return _masked_mean(cross_entropy, mask)


def regression_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2-regression KD, Eq. 6: the squared L2 distance between student and teacher last hidden states.

    student_hidden [B, L, D], teacher_hidden [B, L, D], mask [B, L] -> scalar, the mean over valid positions."""
    return _masked_mean((student_hidden - teacher_hidden).pow(2).sum(-1), mask)


def _neurons(hidden: torch.Tensor, mask: torch.Tensor, normalize: bool) -> torch.Tensor:
    """hidden [B, L, D], mask [B, L] -> the D neurons of each example as rows [B, D, L], padding set to zero and,
    when `normalize`, each neuron L2-normalised over the positions (NST's own implementation does this)."""
    neurons = torch.where(mask.bool().unsqueeze(-1), hidden, 0).transpose(1, 2)
    return F.normalize(neurons, dim=-1) if normalize else neurons


def _mean_gaussian_kernel(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """a [B, N, L], b [B, M, L] -> [B]: the mean of exp(-|a_i - b_j|^2 / 2 sigma^2) over all N x M pairs, with
    |a - b|^2 = |a|^2 + |b|^2 - 2 a.b as matrix products (clamped at 0 against rounding)."""
    squared = a.pow(2).sum(-1).unsqueeze(2) + b.pow(2).sum(-1).unsqueeze(1) - 2 * a @ b.transpose(1, 2)
    return torch.exp(-squared.clamp(min=0) / (2 * sigma**2)).mean((1, 2))


def nst_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor,
    sigma: float = 1.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Neuron Selectivity Transfer, Eq. 7: the squared MMD between the student's and the teacher's neurons, each
    neuron being one hidden dimension's activation pattern over the positions of a sentence (a vector over L),
    with a Gaussian kernel of width sigma (sigma = 1 in Sec. 3.4).

    student_hidden [B, L, D_s], teacher_hidden [B, L, D_t], mask [B, L] -> scalar, the mean over the batch of
    MMD^2 = mean k(s, s') + mean k(t, t') - 2 mean k(s, t). Padded positions are zeroed, so they add nothing to
    any distance. `normalize` L2-normalises each neuron first, as Huang and Wang's implementation does: with
    sigma = 1, raw activation vectors over 128 positions are so far apart that every cross-neuron kernel value
    underflows to 0 in float32. The widths may differ (D_s != D_t): MMD compares two sets of L-dim vectors of
    any sizes."""
    student = _neurons(student_hidden, mask, normalize)
    teacher = _neurons(teacher_hidden, mask, normalize)
    mmd2 = (
        _mean_gaussian_kernel(student, student, sigma)
        + _mean_gaussian_kernel(teacher, teacher, sigma)
        - 2 * _mean_gaussian_kernel(student, teacher, sigma)
    )
    return mmd2.mean()


def nst_poly_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """NST as the authors' released code computes it (zinengtang/VidLanKD, `NSTLoss` in vteacher/loss.py, called
    per example from vlm/model.py), for comparison with Eq. 7: polynomial kernel k(a, b) = (a.b)^2 and no
    teacher-teacher term (a constant for the student), i.e. mean (s.s')^2 - 2 mean (s.t)^2 over neuron pairs.

    student_hidden [B, L, D_s], teacher_hidden [B, L, D_t], mask [B, L] -> scalar. Normalised as theirs: each token
    vector L2-normalised (their distillation head and teacher states end with that, so doing it again is a no-op),
    then each neuron L2-normalised over the positions. Two departures, for padding invariance and a scale free of
    the padded length: padded positions are zeroed (their code does not mask), and the result is the mean over
    the batch (theirs sums over the batch and divides by the padded length L)."""
    student = _neurons(F.normalize(student_hidden, dim=-1), mask, normalize=True)
    teacher = _neurons(F.normalize(teacher_hidden, dim=-1), mask, normalize=True)
    student_student = (student @ student.transpose(1, 2)).pow(2).mean((1, 2))
    student_teacher = (student @ teacher.transpose(1, 2)).pow(2).mean((1, 2))
    return (student_student - 2 * student_teacher).mean()


def crd_nce_loss(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, num_data: int, temperature: float = 1.0
) -> torch.Tensor:
    """CRD's NCE bound, Eq. 8, with z = score / temperature and h(z) = exp(z) / (exp(z) + N/M): the mean over the
    batch of -log h(z_pos) - sum_k log(1 - h(z_neg_k)).

    pos_scores [B], neg_scores [B, N] (N negatives per example), num_data M (the dataset's size) -> scalar. In the
    stable form -log h(z) = softplus(log(N/M) - z) and -log(1 - h(z)) = softplus(z - log(N/M)), finite for any
    score. Eq. 8 as written; `CRDLoss` adds CRD's normalising constant by shifting the scores it passes in.
    With N = 0, h = 1 and the loss is 0. log(N/M) is a number of the host, known from the shapes: a tensor made
    for it would be a copy to the GPU that waits for it, each step."""
    log_ratio = math.log(neg_scores.shape[-1] / num_data) if neg_scores.shape[-1] else -math.inf
    positive = F.softplus(log_ratio - pos_scores / temperature)
    negative = F.softplus(neg_scores / temperature - log_ratio).sum(-1)
    return (positive + negative).mean()


class CRDLoss(nn.Module):
    """Contrastive Representation Distillation, Eq. 8, with its memory of negatives.

    forward(student_repr [B, D_s], teacher_repr [B, D_t]) takes one row per anchor: the caller passes sentence
    representations (`mean_pool` of the student's KD output and of the teacher's last hidden states over the
    valid tokens) or token states (each valid token a row, padded ones left out), so this module knows nothing of
    tokens; "example" below is a row. f1, f2 (linear, then L2 normalisation) map both into a shared `dim`-sized
    space; a score is the dot product there, divided by `temperature`.

    Direction: the student's embedding is the anchor; its positive is its own teacher's embedding f2(t_b), its N
    negatives are past teacher embeddings from the memory. CRD's original is symmetric (a second memory of
    student embeddings serves teacher anchors); one direction trains the student and needs one memory.

    Memory: a FIFO queue of the last `buffer_size` teacher embeddings, detached (the teacher is frozen; negatives
    are constants to the loss, as in CRD), stored as buffers so it moves with `.to(device)` and is saved in the
    state dict. The paper keeps one entry per data sample (CRD's code updates each with momentum); at Wikipedia
    scale (120M sentences, Sec. 4.1) that is 60 GB at dim 128, so a bounded queue of recent batches (as in MoCo)
    replaces it.
    Each example draws `num_negatives` entries uniformly, with replacement, from the filled part; before anything
    is stored (the first batch), the other examples of the batch are the negatives (N = B - 1). The queue is
    written after the loss is computed, and only in training mode, so validation leaves it alone. Under data
    parallelism DDP broadcasts rank 0's buffers before each forward, so every replica draws from rank 0's queue.

    `num_data` is M of Eq. 8, the number of training samples; the default is English Wikipedia's 120M sentences
    (Sec. 4.1): pass the corpus's own size."""

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        dim: int = 128,
        temperature: float = 0.07,
        buffer_size: int = 16384,
        num_negatives: int = 16384,
        num_data: int = 120_000_000,
    ) -> None:
        super().__init__()
        self.f1 = nn.Linear(student_dim, dim)
        self.f2 = nn.Linear(teacher_dim, dim)
        self.temperature = temperature
        self.num_negatives = num_negatives
        self.num_data = num_data
        self.register_buffer("memory", torch.zeros(buffer_size, dim))
        self.register_buffer("num_written", torch.zeros((), dtype=torch.long))
        self.register_buffer("log_z", torch.zeros(()))
        self.register_buffer("log_z_set", torch.zeros((), dtype=torch.bool))
        self._empty = True
        """Nothing written yet (`num_written` is 0), kept on the host: the one branch of a step that depends on the
        memory, read without waiting for the GPU; torch.compile compiles both sides of it once."""

    @property
    def filled(self) -> torch.Tensor:
        """How many entries of the memory hold teacher embeddings (a tensor on the memory's device)."""
        return self.num_written.clamp(max=len(self.memory))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._empty = int(self.num_written) == 0

    def forward(
        self, student_repr: torch.Tensor, teacher_repr: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """student_repr [B, D_s], teacher_repr [B, D_t] -> scalar; `generator` (on the batch's device) seeds the
        choice of negatives."""
        student = F.normalize(self.f1(student_repr), dim=-1)
        teacher = F.normalize(self.f2(teacher_repr.detach()), dim=-1)
        positive = (student * teacher).sum(-1)
        negative = self._negative_scores(student, teacher.detach(), generator)
        shift = self.temperature * self._log_partition(positive, negative)
        loss = crd_nce_loss(positive - shift, negative - shift, self.num_data, self.temperature)
        if self.training:
            self._enqueue(teacher.detach())
        return loss

    @torch.no_grad()
    def _log_partition(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """log Z, CRD's normalising constant: exp(z) / Z is NCE's model probability, with Z = M * mean exp(z)
        estimated on the first training batch and fixed after (as CRD's code does). Without it exp(z) is about 1
        for every pair while N/M is small, so h is near 1 for all negatives and the loss (a sum over N of them)
        is in the hundreds, drowning L_MLM."""
        z = torch.cat([positive.flatten(), negative.flatten()]).float() / self.temperature
        estimate = torch.logsumexp(z, 0) - math.log(z.numel()) + math.log(self.num_data)
        log_z = torch.where(self.log_z_set, self.log_z, estimate)  # tensors throughout: no wait on the GPU
        if self.training:
            self.log_z.copy_(log_z)
            self.log_z_set.fill_(True)
        return log_z.to(positive.dtype)

    def _negative_scores(
        self, student: torch.Tensor, teacher: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """student [B, dim], teacher [B, dim] (detached) -> scores [B, N] of each student embedding with its
        negatives: every memory entry scored once, then N of the filled ones picked per example."""
        batch_size = len(student)
        if self._empty:  # example b's negatives: columns 0..b-1 and b+1..B-1 of the batch's scores
            j = torch.arange(batch_size - 1, device=student.device).unsqueeze(0)
            others = j + (j >= torch.arange(batch_size, device=student.device).unsqueeze(1)).long()
            return (student @ teacher.T).gather(1, others)
        # Every entry is scored and the picks index the filled ones, so no shape depends on how full the memory is.
        scores = student @ self.memory.to(student.dtype).T
        filled = self.filled
        # `uniform_`, not `torch.rand`: the same draws, and torch.compile traces it at a batch size it keeps symbolic
        # (a shorter last validation batch), where `rand(..., generator=None)` fails.
        uniform = torch.empty(batch_size, self.num_negatives, device=student.device).uniform_(generator=generator)
        picks = (uniform * filled).long().clamp(max=filled - 1)
        return scores.gather(1, picks)

    @torch.no_grad()
    def _enqueue(self, teacher: torch.Tensor) -> None:
        """teacher [B, dim] -> written over the oldest entries; a batch larger than the memory keeps its last."""
        size = len(self.memory)
        kept = teacher[-size:]
        start = self.num_written + (len(teacher) - len(kept))
        slots = (start + torch.arange(len(kept), device=self.memory.device)) % size
        # A new tensor, not a write in place: the backward pass needs the entries this step scored.
        self.memory = self.memory.index_put((slots,), kept.to(self.memory.dtype))
        self.num_written += len(teacher)
        self._empty = False


def crd_nt_xent_loss(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The authors' released "CRD" (zinengtang/VidLanKD: `CoLwithBert.forward` in vlm/model.py calls
    `contrastive_loss_item` of vteacher/loss.py once per position, passing temperature 1.0 over its default 0.5;
    real CRD is a TODO there),
    for comparison with Eq. 8: SimCLR's NT-Xent at every position, in-batch, without memory or NCE bound.

    At position i, the n_i examples valid there give 2n_i vectors, their student's s_bi and teacher's t_bi. Each is
    an anchor (symmetric: teacher anchors too, whose terms reach the student through their scores); its positive
    is its counterpart (s_bi <-> t_bi), its 2n_i - 2 negatives the other examples' vectors of both models; a score
    is the cosine divided by `temperature`, and an anchor's term the cross-entropy of its positive among them.
    l_i = sum of the anchors' terms / (2n_i)^2: as theirs, F.cross_entropy's mean over the anchors then divided by
    their number again. The result is the mean of l_i over the positions where some example is valid.
    No projection on the teacher's side (their `kd2_teacher_head` is built but never used); the student's vectors
    are its KD output (theirs: a head of its own for this objective, ending in an L2 normalisation that the cosine
    makes moot).

    student_hidden [B, L, D], teacher_hidden [B, L, D], mask [B, L] -> scalar. Departures, for padding invariance:
    their code scores every position of the padded batch (padded states as anchors and negatives), uses 2B where
    this uses 2n_i, and averages over the padded length; here padded positions are neither anchors nor negatives
    and the mean runs over positions holding a valid token. On a batch without padding the two agree exactly."""
    valid = mask.bool().transpose(0, 1)  # [L, B]
    batch_size = valid.shape[1]

    def unit_vectors(hidden: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [L, B, D], padding zeroed
        return F.normalize(torch.where(mask.bool().unsqueeze(-1), hidden, 0), dim=-1).transpose(0, 1)

    vectors = torch.cat([unit_vectors(student_hidden), unit_vectors(teacher_hidden)], dim=1)  # [L, 2B, D]
    present = torch.cat([valid, valid], dim=1)  # [L, 2B]
    scores = vectors @ vectors.transpose(1, 2) / temperature  # [L, 2B, 2B]
    itself = torch.eye(2 * batch_size, dtype=torch.bool, device=scores.device)
    # The lowest finite value, not -inf: a position without any valid token must still give finite gradients.
    logits = scores.masked_fill(itself | ~present.unsqueeze(1), torch.finfo(scores.dtype).min)
    counterpart = torch.arange(2 * batch_size, device=scores.device).roll(batch_size)
    positive = scores.gather(2, counterpart.expand(len(scores), -1).unsqueeze(-1)).squeeze(-1)  # [L, 2B]
    cross_entropy = torch.where(present, torch.logsumexp(logits, -1) - positive, 0)
    per_position = cross_entropy.sum(-1) / (2 * valid.sum(-1)).pow(2).clamp(min=1)
    return per_position.sum() / valid.any(-1).sum().clamp(min=1)


def assign_vokens(teacher_hidden: torch.Tensor, video_bank: torch.Tensor) -> torch.Tensor:
    """Vokenization (Sec. 3.4, the labels of Eq. 9): each token's voken is the bank video whose feature has the
    highest cosine similarity with the token's teacher hidden state.

    teacher_hidden [B, L, D], video_bank [K, D] -> vokens [B, L] (long, indices into the bank). Padded positions
    get a voken too; `voken_loss` ignores them."""
    similarity = F.normalize(teacher_hidden, dim=-1) @ F.normalize(video_bank, dim=-1).T
    return similarity.argmax(-1)


def voken_loss(voken_logits: torch.Tensor, vokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Vokenization KD, Eq. 9: the student's negative log-likelihood of each token's voken.

    voken_logits [B, L, K], vokens [B, L], mask [B, L] -> scalar, the mean over valid positions (whatever the
    vokens at padded positions hold)."""
    return mlm_loss(voken_logits, vokens.masked_fill(~mask.bool(), IGNORE_INDEX))

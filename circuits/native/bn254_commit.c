/* KZG column commitments on BN254 (alt_bn128) as sparse multi-scalar multiplications over the
 * Lagrange-basis points of a halo2/ezkl SRS:  Com(v) = Z + sum_i v_i * L_i.
 *
 * Z (the commitment of the all-zero column: ezkl fills the unusable rows with constants) is
 * passed in; v_i are small signed integers (|v_i| < 2^63). Points are read exactly as the SRS
 * file stores them (affine x, y in Montgomery form, 4 little-endian 64-bit limbs each), so no
 * conversion is needed. Results are affine x, y in normal form, little-endian limbs.
 * Pippenger's bucket method over the column's entries (windows of 4–6 bits by their number) and
 * Straus' shared doubling chain over the few 52-bit blinders; Straus alone for short columns
 * (method 0 of commit_columns_method: Straus over everything, kept for side-by-side benchmarks).
 * Built by circuits/native/__init__.py with the system C compiler; tested equal to
 * ezkl.kzg_commit and to the commitments embedded in proofs (tests/test_circuit.py). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned __int128 u128;
typedef struct { uint64_t v[4]; } fe;
typedef struct { fe X, Y, Z; int inf; } jac;

static const fe P = {{0x3c208c16d87cfd47ULL, 0x97816a916871ca8dULL, 0xb85045b68181585dULL, 0x30644e72e131a029ULL}};
static const uint64_t PINV = 0x87d20782e4866389ULL; /* -p^-1 mod 2^64 */
static const fe R1 = {{0xd35d438dc58f0d9dULL, 0x0a78eb28f5c70b3dULL, 0x666ea36f7879462cULL, 0x0e0a77c19a07df2fULL}}; /* R mod p */

static int geq(const fe *a, const fe *b) {
    for (int i = 3; i >= 0; i--) {
        if (a->v[i] > b->v[i]) return 1;
        if (a->v[i] < b->v[i]) return 0;
    }
    return 1;
}
static void sub_raw(fe *r, const fe *a, const fe *b) {
    u128 br = 0;
    for (int i = 0; i < 4; i++) {
        u128 d = (u128)a->v[i] - b->v[i] - (uint64_t)br;
        r->v[i] = (uint64_t)d;
        br = (d >> 64) ? 1 : 0;
    }
}
static void fadd(fe *r, const fe *a, const fe *b) {
    u128 c = 0;
    fe t;
    for (int i = 0; i < 4; i++) {
        c = (u128)a->v[i] + b->v[i] + (uint64_t)(c >> 64);
        t.v[i] = (uint64_t)c;
    }
    if ((c >> 64) || geq(&t, &P)) sub_raw(&t, &t, &P);
    *r = t;
}
static void fsub(fe *r, const fe *a, const fe *b) {
    if (geq(a, b)) { sub_raw(r, a, b); return; }
    fe t;
    sub_raw(&t, b, a);   /* b - a */
    sub_raw(r, &P, &t);  /* p - (b - a) */
}
static void fmul(fe *r, const fe *a, const fe *b) {  /* Montgomery CIOS */
    uint64_t t[6] = {0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        u128 c = 0;
        for (int j = 0; j < 4; j++) {
            c = (u128)a->v[j] * b->v[i] + t[j] + (uint64_t)(c >> 64);
            t[j] = (uint64_t)c;
        }
        c = (u128)t[4] + (uint64_t)(c >> 64);
        t[4] = (uint64_t)c;
        t[5] = (uint64_t)(c >> 64);
        uint64_t m = t[0] * PINV;
        c = (u128)m * P.v[0] + t[0];
        for (int j = 1; j < 4; j++) {
            c = (u128)m * P.v[j] + t[j] + (uint64_t)(c >> 64);
            t[j - 1] = (uint64_t)c;
        }
        c = (u128)t[4] + (uint64_t)(c >> 64);
        t[3] = (uint64_t)c;
        t[4] = t[5] + (uint64_t)(c >> 64);
    }
    fe o = {{t[0], t[1], t[2], t[3]}};
    if (t[4] || geq(&o, &P)) sub_raw(&o, &o, &P);
    *r = o;
}
static int fzero(const fe *a) { return !(a->v[0] | a->v[1] | a->v[2] | a->v[3]); }
static int feq(const fe *a, const fe *b) { return !memcmp(a, b, sizeof(fe)); }

static void dbl(jac *r, const jac *p) {
    if (p->inf || fzero(&p->Y)) { r->inf = 1; return; }
    fe A, B, C, D, E, F, t, X3, Y3, Z3;
    fmul(&A, &p->X, &p->X);
    fmul(&B, &p->Y, &p->Y);
    fmul(&C, &B, &B);
    fadd(&t, &p->X, &B); fmul(&t, &t, &t); fsub(&t, &t, &A); fsub(&t, &t, &C); fadd(&D, &t, &t);
    fadd(&E, &A, &A); fadd(&E, &E, &A);
    fmul(&F, &E, &E);
    fsub(&X3, &F, &D); fsub(&X3, &X3, &D);
    fsub(&t, &D, &X3); fmul(&Y3, &E, &t);
    fadd(&C, &C, &C); fadd(&C, &C, &C); fadd(&C, &C, &C);
    fsub(&Y3, &Y3, &C);
    fmul(&Z3, &p->Y, &p->Z); fadd(&Z3, &Z3, &Z3);
    r->X = X3; r->Y = Y3; r->Z = Z3; r->inf = 0;
}
/* r = p + (x2, y2) (affine, Montgomery) */
static void madd(jac *r, const jac *p, const fe *x2, const fe *y2) {
    if (p->inf) { r->X = *x2; r->Y = *y2; r->Z = R1; r->inf = 0; return; }
    fe Z1Z1, U2, S2, H, HH, I, J, rr, V, t, X3, Y3, Z3;
    fmul(&Z1Z1, &p->Z, &p->Z);
    fmul(&U2, x2, &Z1Z1);
    fmul(&t, &p->Z, &Z1Z1); fmul(&S2, y2, &t);
    fsub(&H, &U2, &p->X);
    fsub(&rr, &S2, &p->Y); fadd(&rr, &rr, &rr);
    if (fzero(&H)) {
        if (fzero(&rr)) { dbl(r, p); return; }
        r->inf = 1; return;
    }
    fmul(&HH, &H, &H);
    fadd(&I, &HH, &HH); fadd(&I, &I, &I);
    fmul(&J, &H, &I);
    fmul(&V, &p->X, &I);
    fmul(&X3, &rr, &rr); fsub(&X3, &X3, &J); fsub(&X3, &X3, &V); fsub(&X3, &X3, &V);
    fsub(&t, &V, &X3); fmul(&Y3, &rr, &t);
    fmul(&t, &p->Y, &J); fadd(&t, &t, &t); fsub(&Y3, &Y3, &t);
    fadd(&t, &p->Z, &H); fmul(&t, &t, &t); fsub(&t, &t, &Z1Z1); fsub(&Z3, &t, &HH);
    r->X = X3; r->Y = Y3; r->Z = Z3; r->inf = 0;
}
static void finv(fe *r, const fe *a) {  /* a^(p-2), Montgomery in and out */
    fe e = P, acc = R1, base = *a;
    e.v[0] -= 2;  /* p is odd and > 2: no borrow */
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 64; b++) {
            if ((e.v[i] >> b) & 1) fmul(&acc, &acc, &base);
            fmul(&base, &base, &base);
        }
    *r = acc;
}

/* r = p + q (both Jacobian; add-2007-bl) */
static void jadd(jac *r, const jac *p, const jac *q) {
    if (p->inf) { *r = *q; return; }
    if (q->inf) { *r = *p; return; }
    fe Z1Z1, Z2Z2, U1, U2, S1, S2, H, I, J, rr, V, t, X3, Y3, Z3;
    fmul(&Z1Z1, &p->Z, &p->Z);
    fmul(&Z2Z2, &q->Z, &q->Z);
    fmul(&U1, &p->X, &Z2Z2);
    fmul(&U2, &q->X, &Z1Z1);
    fmul(&t, &q->Z, &Z2Z2); fmul(&S1, &p->Y, &t);
    fmul(&t, &p->Z, &Z1Z1); fmul(&S2, &q->Y, &t);
    fsub(&H, &U2, &U1);
    fsub(&rr, &S2, &S1); fadd(&rr, &rr, &rr);
    if (fzero(&H)) {
        if (fzero(&rr)) { dbl(r, p); return; }
        r->inf = 1; return;
    }
    fadd(&I, &H, &H); fmul(&I, &I, &I);
    fmul(&J, &H, &I);
    fmul(&V, &U1, &I);
    fmul(&X3, &rr, &rr); fsub(&X3, &X3, &J); fsub(&X3, &X3, &V); fsub(&X3, &X3, &V);
    fsub(&t, &V, &X3); fmul(&Y3, &rr, &t);
    fmul(&t, &S1, &J); fadd(&t, &t, &t); fsub(&Y3, &Y3, &t);
    fadd(&t, &p->Z, &q->Z); fmul(&t, &t, &t); fsub(&t, &t, &Z1Z1); fsub(&t, &t, &Z2Z2); fmul(&Z3, &t, &H);
    r->X = X3; r->Y = Y3; r->Z = Z3; r->inf = 0;
}

static uint64_t mag(int64_t v) { return v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v; }

static void add_signed(jac *acc, const uint64_t *bases, int64_t i, int neg) {
    const fe *x = (const fe *)(bases + 8 * i), *y = (const fe *)(bases + 8 * i + 4);
    if (neg) { fe ny; fsub(&ny, &(fe){{0, 0, 0, 0}}, y); madd(acc, acc, x, &ny); }
    else madd(acc, acc, x, y);
}

/* the bit length of max |v_i| over the indices in idx[0..n) */
static int top_bits(const int64_t *s, const int64_t *idx, int64_t n) {
    uint64_t mx = 0;
    for (int64_t k = 0; k < n; k++) { uint64_t a = mag(s[idx[k]]); if (a > mx) mx = a; }
    int top = 0;
    while (top < 64 && (mx >> top)) top++;
    return top;
}

/* Straus: one shared doubling chain over the bits of max |v_i| of the indices in idx[0..n) */
static void straus(jac *acc, const uint64_t *bases, const int64_t *s, const int64_t *idx, int64_t n) {
    int top = top_bits(s, idx, n);
    acc->inf = 1;
    for (int bit = top - 1; bit >= 0; bit--) {
        dbl(acc, acc);
        for (int64_t k = 0; k < n; k++) {
            int64_t v = s[idx[k]];
            if ((mag(v) >> bit) & 1) add_signed(acc, bases, idx[k], v < 0);
        }
    }
}

/* Pippenger's bucket method over windows of c bits (c <= 8) of the indices in idx[0..n):
 * per window every point goes once into the bucket of its digit (its sign on the point), and
 * the buckets are summed by the running-sum trick (2·2^c additions) */
static void pippenger(jac *acc, const uint64_t *bases, const int64_t *s, const int64_t *idx, int64_t n, int c) {
    int top = top_bits(s, idx, n);
    int nw = (top + c - 1) / c;
    jac bucket[256];
    acc->inf = 1;
    for (int w = nw - 1; w >= 0; w--) {
        for (int d = 0; d < c; d++) dbl(acc, acc);
        int nb = 1 << c;
        for (int b = 0; b < nb; b++) bucket[b].inf = 1;
        for (int64_t k = 0; k < n; k++) {
            int64_t v = s[idx[k]];
            int dgt = (int)((mag(v) >> (w * c)) & (uint64_t)(nb - 1));
            if (dgt) add_signed(&bucket[dgt], bases, idx[k], v < 0);
        }
        jac run, sum;
        run.inf = 1; sum.inf = 1;
        for (int b = nb - 1; b >= 1; b--) {
            jadd(&run, &run, &bucket[b]);
            jadd(&sum, &sum, &run);
        }
        jadd(acc, acc, &sum);
    }
}

/* bases: n_pts affine points (x, y Montgomery, 8 limbs each); scalars: n_cols x len (row-major);
 * zpt: the zero-column commitment Z (affine Montgomery, 8 limbs; zinf != 0 if it is infinity);
 * out: n_cols x 8 limbs (affine x, y in normal form; all zero for infinity). Returns 0, or -1 if
 * len > n_pts. */
int commit_columns_method(const uint64_t *bases, int64_t n_pts, const int64_t *scalars, int64_t len, int64_t n_cols,
                          const uint64_t *zpt, int zinf, uint64_t *out, int method) {
    if (len > n_pts || len < 0) return -1;
    const fe one = {{1, 0, 0, 0}};
    int64_t *small = malloc(sizeof(int64_t) * (size_t)(2 * len + 2));
    if (!small) return -2;
    int64_t *large = small + len + 1;
    for (int64_t c = 0; c < n_cols; c++) {
        const int64_t *s = scalars + c * len;
        jac acc;
        int64_t ns = 0, nl = 0;
        for (int64_t i = 0; i < len; i++) {
            if (!s[i]) continue;
            if (method == 0 || mag(s[i]) < ((uint64_t)1 << 32)) small[ns++] = i; else large[nl++] = i;
        }
        if (method == 0 || ns < 64) {
            /* Straus over every value (method 0: the whole column, as before) */
            for (int64_t k = 0; k < nl; k++) small[ns + k] = large[k];
            straus(&acc, bases, s, small, ns + nl);
        } else {
            /* Pippenger over the small values (the column's entries), Straus over the few large
             * ones (the 52-bit blinders), then the sum */
            int w = ns >= 512 ? 6 : ns >= 160 ? 5 : 4;
            jac big;
            pippenger(&acc, bases, s, small, ns, w);
            straus(&big, bases, s, large, nl);
            jadd(&acc, &acc, &big);
        }
        if (!zinf) madd(&acc, &acc, (const fe *)zpt, (const fe *)(zpt + 4));
        uint64_t *o = out + 8 * c;
        if (acc.inf) { memset(o, 0, 64); continue; }
        fe zi, zi2, x, y;
        finv(&zi, &acc.Z);
        fmul(&zi2, &zi, &zi);
        fmul(&x, &acc.X, &zi2);
        fmul(&y, &acc.Y, &zi2); fmul(&y, &y, &zi);
        fmul(&x, &x, &one); fmul(&y, &y, &one);  /* out of Montgomery form */
        memcpy(o, x.v, 32); memcpy(o + 4, y.v, 32);
    }
    free(small);
    (void)feq;
    return 0;
}

/* the default: Pippenger where it pays (>= 64 small values), else Straus */
int commit_columns(const uint64_t *bases, int64_t n_pts, const int64_t *scalars, int64_t len, int64_t n_cols,
                   const uint64_t *zpt, int zinf, uint64_t *out) {
    return commit_columns_method(bases, n_pts, scalars, len, n_cols, zpt, zinf, out, 1);
}

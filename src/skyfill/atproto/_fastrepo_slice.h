/*
 * The event stream's part of _fastrepo: a `#commit` event's CAR slice, checked whole, its
 * records as atproto JSON, and the sync 1.1 inversion of its ops. Included by _fastrepo.c
 * (one translation unit: it uses that file's block index, DAG-CBOR reader and JSON writer).
 *
 * As for whole repositories, the Python code (stream/commit.py, mst_edit.py, record.py) is
 * the definition, and this code only ever answers "plainly valid, here is the result" or
 * "not mine" (None): any irregularity, a node the Python decoder would refuse or merely
 * read another way, a missing proof node, leaves the event to the Python path, which gives
 * the verdict in its words.
 *
 * CarIndex.check_all()          every block of the slice hashes to its CID
 * CarIndex.record(cid, max)     (json_text, created) of a record block, or None; created is
 *                               microseconds since the epoch (int) for a UTC (`Z`) createdAt
 *                               the C parser reads, None when the record has no string
 *                               createdAt, else its text (for syntax.parse_datetime, which
 *                               keeps an offset as written)
 * CarIndex.invert(data, ops)    the MST root before the ops (mst_edit.invert_ops), or None;
 *                               ops: a sequence of (action, key, cid, prev), action 0 create,
 *                               1 update, 2 delete
 */

/* ---------------------------------------------------------------- arena */

typedef struct ArenaBlock {
    struct ArenaBlock *next;
    size_t used, cap;
    unsigned char data[];
} ArenaBlock;

typedef struct {
    ArenaBlock *head;
} Arena;

static void *arena_alloc(Arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 16384 ? n : 16384;
        ArenaBlock *b = PyMem_RawMalloc(sizeof(ArenaBlock) + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void arena_free(Arena *a) {
    while (a->head) {
        ArenaBlock *next = a->head->next;
        PyMem_RawFree(a->head);
        a->head = next;
    }
}

/* ---------------------------------------------------------------- the partial MST */

typedef struct {
    const unsigned char *p; /* NULL: no key (an open bound) */
    size_t n;
} MKey;

typedef struct MNode MNode;

typedef struct {
    const unsigned char *cid; /* a subtree not loaded yet (node NULL) */
    MNode *node;              /* loaded; both NULL: an empty subtree */
} MChild;

struct MNode {
    int layer;
    size_t n, cap;
    MKey *keys;
    const unsigned char **vals; /* 36-byte CIDs */
    MChild *subs;               /* n + 1 */
    const unsigned char *cid;   /* the node's CID while it is as loaded; NULL once changed */
};

typedef struct {
    CarIndex *index;
    Arena arena;
    MChild root;
    int root_loaded;
    Buf scratch;
} MTree;

/* Every function below returns 0, -1 (not mine: leave it to Python) or -2 (no memory). */
#define TRY(expr)                                                                          \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ < 0) return rc_;                                                           \
    } while (0)

static const MKey NO_KEY = {NULL, 0};

static inline int kcmp(MKey a, MKey b) {
    size_t m = a.n < b.n ? a.n : b.n;
    int c = memcmp(a.p, b.p, m);
    return c ? c : (a.n < b.n ? -1 : a.n > b.n);
}

static inline int child_empty(MChild c) { return !c.node && !c.cid; }

static size_t bisect(const MNode *node, MKey key) {
    size_t lo = 0, hi = node->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (kcmp(node->keys[mid], key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static MNode *node_new(MTree *t, int layer, size_t cap) {
    MNode *node = arena_alloc(&t->arena, sizeof(MNode));
    if (!node) return NULL;
    node->layer = layer;
    node->n = 0;
    node->cap = cap;
    node->keys = arena_alloc(&t->arena, (cap ? cap : 1) * sizeof(MKey));
    node->vals = arena_alloc(&t->arena, (cap ? cap : 1) * sizeof(unsigned char *));
    node->subs = arena_alloc(&t->arena, (cap + 1) * sizeof(MChild));
    if (!node->keys || !node->vals || !node->subs) return NULL;
    node->subs[0] = (MChild){NULL, NULL};
    node->cid = NULL;
    return node;
}

/* Room for one more key. */
static int node_grow(MTree *t, MNode *node) {
    if (node->n < node->cap) return 0;
    size_t cap = node->cap ? node->cap * 2 : 4;
    MKey *keys = arena_alloc(&t->arena, cap * sizeof(MKey));
    const unsigned char **vals = arena_alloc(&t->arena, cap * sizeof(unsigned char *));
    MChild *subs = arena_alloc(&t->arena, (cap + 1) * sizeof(MChild));
    if (!keys || !vals || !subs) return -2;
    memcpy(keys, node->keys, node->n * sizeof(MKey));
    memcpy(vals, node->vals, node->n * sizeof(unsigned char *));
    memcpy(subs, node->subs, (node->n + 1) * sizeof(MChild));
    node->keys = keys;
    node->vals = vals;
    node->subs = subs;
    node->cap = cap;
    return 0;
}

/* Read and check a node block as mst_node.decode_node's canonical path does; *out has
   layer -1 when it holds no keys. */
static int parse_node(MTree *t, const unsigned char *cid, MNode **out) {
    Slot *s = verified_block(t->index, cid);
    if (!s) return -1;
    Reader r = {s->data, 0, (size_t)s->len};
    int major;
    uint64_t n;
    if (read_head(&r, &major, &n) < 0 || major != 5 || n != 2) return -1;
    if (expect_key(&r, 'e') < 0 || read_head(&r, &major, &n) < 0 || major != 4) return -1;
    if (n > (r.end - r.pos) / 8) return -1;
    MNode *node = node_new(t, -1, (size_t)n);
    if (!node) return -2;
    const unsigned char *prev = NULL;
    size_t prev_len = 0;
    for (size_t i = 0; i < (size_t)n; i++) {
        uint64_t p, klen;
        if (read_head(&r, &major, &klen) < 0 || major != 5 || klen != 4) return -1;
        if (expect_key(&r, 'k') < 0 || read_head(&r, &major, &klen) < 0 || major != 2 ||
            klen > r.end - r.pos)
            return -1;
        const unsigned char *suffix = r.p + r.pos;
        r.pos += (size_t)klen;
        if (expect_key(&r, 'p') < 0 || read_head(&r, &major, &p) < 0 || major != 0 ||
            p > prev_len)
            return -1;
        /* the longest shared prefix, as mst_node writes it; and no empty key */
        if ((klen && p < prev_len && prev[p] == suffix[0]) || p + klen == 0 ||
            p + klen > MAX_RKEY + 320)
            return -1;
        unsigned char *key = arena_alloc(&t->arena, (size_t)(p + klen));
        if (!key) return -2;
        if (p) memcpy(key, prev, (size_t)p);
        memcpy(key + p, suffix, (size_t)klen);
        MKey k = {key, (size_t)(p + klen)};
        if (i && kcmp(node->keys[i - 1], k) >= 0) return -1;
        int layer = key_layer(k.p, k.n);
        if (i && layer != node->layer) return -1;
        node->layer = layer;
        node->keys[i] = k;
        prev = key;
        prev_len = k.n;
        if (expect_key(&r, 't') < 0 || read_link_or_null(&r, &node->subs[i + 1].cid) < 0)
            return -1;
        node->subs[i + 1].node = NULL;
        if (expect_key(&r, 'v') < 0 || r.end - r.pos < 2 || r.p[r.pos] != 0xd8 ||
            r.p[r.pos + 1] != 42)
            return -1;
        r.pos += 2;
        if (read_link_after_tag(&r, &node->vals[i]) < 0) return -1;
        node->n = i + 1;
    }
    if (expect_key(&r, 'l') < 0 || read_link_or_null(&r, &node->subs[0].cid) < 0 ||
        r.pos != r.end)
        return -1;
    node->cid = s->cid;
    *out = node;
    return 0;
}

static int leaf_has_subtree(const MNode *node) {
    if (node->layer != 0) return 0;
    for (size_t i = 0; i <= node->n; i++)
        if (!child_empty(node->subs[i])) return 1;
    return 0;
}

/* PartialMST._load: the node of a subtree at `layer` bounded by (lo, hi). */
static int load(MTree *t, MChild child, int layer, MKey lo, MKey hi, MNode **out) {
    if (child.node || !child.cid) {
        *out = child.node;
        return 0;
    }
    if (layer < 0) return -1;
    MNode *node;
    TRY(parse_node(t, child.cid, &node));
    if (node->n == 0) {
        if (!node->subs[0].cid) return -1; /* an empty subtree node */
        node->layer = layer;
    } else if (node->layer != layer) {
        return -1;
    }
    if (node->n && ((lo.p && kcmp(node->keys[0], lo) <= 0) ||
                    (hi.p && kcmp(node->keys[node->n - 1], hi) >= 0)))
        return -1;
    if (leaf_has_subtree(node)) return -1;
    *out = node;
    return 0;
}

static int root_node(MTree *t, MNode **out) {
    if (!t->root_loaded) {
        t->root_loaded = 1;
        MNode *node;
        TRY(parse_node(t, t->root.cid, &node));
        if (node->n == 0) {
            if (node->subs[0].cid) return -1; /* a root without keys but with a subtree */
            node = NULL;
        } else if (leaf_has_subtree(node)) {
            return -1;
        }
        t->root = (MChild){node ? node->cid : NULL, node};
    }
    *out = t->root.node;
    return 0;
}

static inline void gap_bounds(const MNode *node, size_t i, MKey lo, MKey hi, MKey *glo,
                              MKey *ghi) {
    *glo = i ? node->keys[i - 1] : lo;
    *ghi = i < node->n ? node->keys[i] : hi;
}

/* PartialMST._slot: load the subtree in gap i and keep it there. */
static int slot(MTree *t, MNode *node, size_t i, MKey lo, MKey hi, MNode **out) {
    MChild *child = &node->subs[i];
    if (child->node || !child->cid) {
        *out = child->node;
        return 0;
    }
    TRY(load(t, *child, node->layer - 1, lo, hi, out));
    child->node = *out;
    return 0;
}

/* The value under key, or NULL. */
static int tree_get(MTree *t, MKey key, const unsigned char **value) {
    MNode *node;
    TRY(root_node(t, &node));
    int layer = key_layer(key.p, key.n);
    MKey lo = NO_KEY, hi = NO_KEY;
    *value = NULL;
    while (node && node->layer >= layer) {
        size_t i = bisect(node, key);
        if (node->layer == layer) {
            if (i < node->n && kcmp(node->keys[i], key) == 0) *value = node->vals[i];
            return 0;
        }
        if (i) lo = node->keys[i - 1];
        if (i < node->n) hi = node->keys[i];
        TRY(slot(t, node, i, lo, hi, &node));
    }
    return 0;
}

static inline MNode *nonempty(MNode *node) {
    return (!node || node->n || !child_empty(node->subs[0])) ? node : NULL;
}

static inline MChild as_child(MNode *node) { return (MChild){node ? node->cid : NULL, node}; }

/* PartialMST._split: a subtree cut into the keys below `key` and those above it. */
static int split(MTree *t, MNode *node, MKey key, MKey lo, MKey hi, MNode **below,
                 MNode **above) {
    if (!node) {
        *below = *above = NULL;
        return 0;
    }
    size_t i = bisect(node, key), n = node->n;
    MKey glo, ghi;
    gap_bounds(node, i, lo, hi, &glo, &ghi);
    MNode *child, *b, *a;
    TRY(slot(t, node, i, glo, ghi, &child));
    TRY(split(t, child, key, glo, ghi, &b, &a));
    MNode *low = node_new(t, node->layer, i), *high = node_new(t, node->layer, n - i);
    if (!low || !high) return -2;
    memcpy(low->keys, node->keys, i * sizeof(MKey));
    memcpy(low->vals, node->vals, i * sizeof(unsigned char *));
    memcpy(low->subs, node->subs, i * sizeof(MChild));
    low->subs[i] = as_child(b);
    low->n = i;
    memcpy(high->keys, node->keys + i, (n - i) * sizeof(MKey));
    memcpy(high->vals, node->vals + i, (n - i) * sizeof(unsigned char *));
    high->subs[0] = as_child(a);
    memcpy(high->subs + 1, node->subs + i + 1, (n - i) * sizeof(MChild));
    high->n = n - i;
    *below = nonempty(low);
    *above = nonempty(high);
    return 0;
}

static int put_at(MTree *t, MNode *node, MKey key, const unsigned char *value, int layer,
                  MKey lo, MKey hi) {
    size_t i = bisect(node, key);
    MKey glo, ghi;
    gap_bounds(node, i, lo, hi, &glo, &ghi);
    if (node->layer == layer) {
        if (i < node->n && kcmp(node->keys[i], key) == 0) {
            if (memcmp(node->vals[i], value, CID_LEN) != 0) {
                node->vals[i] = value;
                node->cid = NULL;
            }
            return 0;
        }
        MNode *child, *below, *above;
        TRY(slot(t, node, i, glo, ghi, &child));
        TRY(split(t, child, key, glo, ghi, &below, &above));
        TRY(node_grow(t, node));
        memmove(node->keys + i + 1, node->keys + i, (node->n - i) * sizeof(MKey));
        memmove(node->vals + i + 1, node->vals + i, (node->n - i) * sizeof(unsigned char *));
        memmove(node->subs + i + 2, node->subs + i + 1, (node->n - i) * sizeof(MChild));
        node->keys[i] = key;
        node->vals[i] = value;
        node->subs[i] = as_child(below);
        node->subs[i + 1] = as_child(above);
        node->n++;
        node->cid = NULL;
        return 0;
    }
    MNode *child;
    TRY(slot(t, node, i, glo, ghi, &child));
    if (!child) {
        child = node_new(t, node->layer - 1, 0);
        if (!child) return -2;
        node->subs[i] = as_child(child);
    }
    TRY(put_at(t, child, key, value, layer, glo, ghi));
    if (!child->cid) node->cid = NULL;
    return 0;
}

static int tree_put(MTree *t, MKey key, const unsigned char *value) {
    int layer = key_layer(key.p, key.n);
    MNode *root;
    TRY(root_node(t, &root));
    if (!root && !(root = node_new(t, layer, 0))) return -2;
    while (root->layer < layer) {
        MNode *up = node_new(t, root->layer + 1, 0);
        if (!up) return -2;
        up->subs[0] = as_child(root);
        root = up;
    }
    t->root = as_child(root);
    return put_at(t, root, key, value, layer, NO_KEY, NO_KEY);
}

/* PartialMST._merge: two adjacent subtrees at `layer` joined (only facing edges loaded). */
static int merge(MTree *t, MChild low, MChild high, int layer, MKey blo, MKey bhi, MKey middle,
                 MChild *out) {
    if (child_empty(low)) {
        *out = high;
        return 0;
    }
    if (child_empty(high)) {
        *out = low;
        return 0;
    }
    MNode *a, *b;
    TRY(load(t, low, layer, blo, middle, &a));
    TRY(load(t, high, layer, middle, bhi, &b));
    if (!a || !b) return -1;
    MKey a_last = a->n ? a->keys[a->n - 1] : blo, b_first = b->n ? b->keys[0] : bhi;
    MChild inner;
    TRY(merge(t, a->subs[a->n], b->subs[0], layer - 1, a_last, b_first, middle, &inner));
    MNode *node = node_new(t, layer, a->n + b->n);
    if (!node) return -2;
    memcpy(node->keys, a->keys, a->n * sizeof(MKey));
    memcpy(node->keys + a->n, b->keys, b->n * sizeof(MKey));
    memcpy(node->vals, a->vals, a->n * sizeof(unsigned char *));
    memcpy(node->vals + a->n, b->vals, b->n * sizeof(unsigned char *));
    memcpy(node->subs, a->subs, a->n * sizeof(MChild));
    node->subs[a->n] = inner;
    memcpy(node->subs + a->n + 1, b->subs + 1, b->n * sizeof(MChild));
    node->n = a->n + b->n;
    *out = as_child(node);
    return 0;
}

/* 1: removed, 0: absent. */
static int delete_at(MTree *t, MNode *node, MKey key, int layer, MKey lo, MKey hi) {
    size_t i = bisect(node, key);
    if (node->layer == layer) {
        if (i == node->n || kcmp(node->keys[i], key) != 0) return 0;
        MChild high = node->subs[i + 1];
        memmove(node->keys + i, node->keys + i + 1, (node->n - i - 1) * sizeof(MKey));
        memmove(node->vals + i, node->vals + i + 1, (node->n - i - 1) * sizeof(unsigned char *));
        memmove(node->subs + i + 1, node->subs + i + 2, (node->n - i - 1) * sizeof(MChild));
        node->n--;
        MKey glo, ghi;
        gap_bounds(node, i, lo, hi, &glo, &ghi);
        TRY(merge(t, node->subs[i], high, node->layer - 1, glo, ghi, key, &node->subs[i]));
        node->cid = NULL;
        return 1;
    }
    if (node->layer < layer) return 0;
    MKey clo, chi;
    gap_bounds(node, i, lo, hi, &clo, &chi);
    MNode *child;
    TRY(slot(t, node, i, clo, chi, &child));
    if (!child) return 0;
    int removed = delete_at(t, child, key, layer, clo, chi);
    if (removed == 1) {
        node->cid = NULL;
        node->subs[i] = as_child(nonempty(child));
    }
    return removed;
}

static int tree_delete(MTree *t, MKey key) {
    MNode *root;
    TRY(root_node(t, &root));
    if (!root) return 0;
    int removed = delete_at(t, root, key, key_layer(key.p, key.n), NO_KEY, NO_KEY);
    if (removed != 1) return removed;
    MNode *node = root; /* _trim_top: keyless nodes off the top */
    while (node && node->n == 0) {
        if (child_empty(node->subs[0])) {
            node = NULL;
            break;
        }
        TRY(load(t, node->subs[0], node->layer - 1, NO_KEY, NO_KEY, &node));
    }
    t->root = as_child(node);
    return 1;
}

/* ---------------------------------------------------------------- encoding */

static int put_head(Buf *b, int major, uint64_t n) {
    unsigned char h[9];
    size_t len;
    if (n < 24) {
        h[0] = (unsigned char)(major | n);
        len = 1;
    } else if (n < 0x100) {
        h[0] = (unsigned char)(major | 24);
        h[1] = (unsigned char)n;
        len = 2;
    } else if (n < 0x10000) {
        h[0] = (unsigned char)(major | 25);
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
        len = 3;
    } else {
        return -1; /* no key or count of a node is this long */
    }
    return buf_put(b, h, len) < 0 ? -2 : 0;
}

static int put_link(Buf *b, const unsigned char *cid) {
    static const unsigned char LINK[] = {0xd8, 0x2a, 0x58, 0x25, 0x00};
    if (!cid) return buf_byte(b, (char)0xf6) < 0 ? -2 : 0;
    return (buf_put(b, LINK, sizeof LINK) < 0 || buf_put(b, cid, CID_LEN) < 0) ? -2 : 0;
}

/* The node's CID; a changed node (and the changed ones below it) encoded, canonically. */
static int encode(MTree *t, MNode *node, const unsigned char **cid) {
    if (node->cid) {
        *cid = node->cid;
        return 0;
    }
    for (size_t i = 0; i <= node->n; i++) { /* children first: the scratch buffer is shared */
        MChild *c = &node->subs[i];
        if (c->node) {
            const unsigned char *sub;
            TRY(encode(t, c->node, &sub));
            c->cid = sub;
        }
    }
    Buf *b = &t->scratch;
    b->len = 0;
    static const unsigned char E[] = {0xa2, 0x61, 'e'}, L[] = {0x61, 'l'};
    if (buf_put(b, E, 3) < 0) return -2;
    TRY(put_head(b, 0x80, node->n));
    MKey prev = {(const unsigned char *)"", 0};
    for (size_t i = 0; i < node->n; i++) {
        MKey k = node->keys[i];
        size_t p = 0, m = prev.n < k.n ? prev.n : k.n;
        while (p < m && prev.p[p] == k.p[p]) p++;
        static const unsigned char K[] = {0xa4, 0x61, 'k'}, P[] = {0x61, 'p'}, T[] = {0x61, 't'},
                                   V[] = {0x61, 'v'};
        if (buf_put(b, K, 3) < 0) return -2;
        TRY(put_head(b, 0x40, k.n - p));
        if (buf_put(b, k.p + p, k.n - p) < 0 || buf_put(b, P, 2) < 0) return -2;
        TRY(put_head(b, 0, p));
        if (buf_put(b, T, 2) < 0) return -2;
        TRY(put_link(b, node->subs[i + 1].cid));
        if (buf_put(b, V, 2) < 0) return -2;
        TRY(put_link(b, node->vals[i]));
        prev = k;
    }
    if (buf_put(b, L, 2) < 0) return -2;
    TRY(put_link(b, node->subs[0].cid));
    unsigned char *out = arena_alloc(&t->arena, CID_LEN);
    if (!out) return -2;
    memcpy(out, CID_PREFIX, 4);
    sha256((const unsigned char *)b->data, b->len, out + 4);
    node->cid = out;
    *cid = out;
    return 0;
}

static int tree_root(MTree *t, const unsigned char **cid, unsigned char *empty_cid) {
    if (!t->root_loaded) {
        *cid = t->root.cid;
        return 0;
    }
    if (!t->root.node) { /* the empty tree: one node without entries */
        static const unsigned char EMPTY[] = {0xa2, 0x61, 'e', 0x80, 0x61, 'l', 0xf6};
        memcpy(empty_cid, CID_PREFIX, 4);
        sha256(EMPTY, sizeof EMPTY, empty_cid + 4);
        *cid = empty_cid;
        return 0;
    }
    return encode(t, t->root.node, cid);
}

/* ---------------------------------------------------------------- the inversion */

typedef struct {
    int action; /* 0 create, 1 update, 2 delete */
    MKey key;
    const unsigned char *cid, *prev;
} MOp;

static inline int record_cid_ok(const unsigned char *cid, Py_ssize_t n) {
    return n == CID_LEN && cid[0] == 0x01 && (cid[1] == 0x71 || cid[1] == 0x55) &&
           cid[2] == 0x12 && cid[3] == 0x20;
}

/* mst_edit.invert_ops: each op checked against the new tree, then undone, last first. */
static int invert(MTree *t, MOp *ops, size_t n, const unsigned char **root,
                  unsigned char *empty_cid) {
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++)
            if (kcmp(ops[i].key, ops[j].key) == 0) return -1;
        const unsigned char *held;
        TRY(tree_get(t, ops[i].key, &held));
        if (ops[i].action == 2) {
            if (held) return -1;
        } else if (!held || memcmp(held, ops[i].cid, CID_LEN) != 0) {
            return -1;
        }
    }
    for (size_t i = n; i-- > 0;) {
        if (ops[i].action == 0) {
            TRY(tree_delete(t, ops[i].key));
        } else {
            TRY(tree_put(t, ops[i].key, ops[i].prev));
        }
    }
    return tree_root(t, root, empty_cid);
}

/* One op tuple (action, key, cid, prev) read into `op`; 0, or -1 (not plainly valid). */
static int read_op(PyObject *item, MOp *op) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) return -1;
    PyObject *action = PyTuple_GET_ITEM(item, 0), *key = PyTuple_GET_ITEM(item, 1),
             *cid = PyTuple_GET_ITEM(item, 2), *prev = PyTuple_GET_ITEM(item, 3);
    long a = PyLong_Check(action) ? PyLong_AsLong(action) : -1;
    if (a < 0 || a > 2 || !PyBytes_Check(key) || PyBytes_GET_SIZE(key) == 0 ||
        PyBytes_GET_SIZE(key) > MAX_RKEY + 320)
        return -1;
    op->action = (int)a;
    op->key = (MKey){(const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key)};
    op->cid = op->prev = NULL;
    if (a != 2) { /* a create or update holds its record's CID */
        if (!PyBytes_Check(cid) || PyBytes_GET_SIZE(cid) != CID_LEN) return -1;
        op->cid = (const unsigned char *)PyBytes_AS_STRING(cid);
    }
    if (a != 0) { /* an update or delete names the record it replaced */
        if (!PyBytes_Check(prev) ||
            !record_cid_ok((const unsigned char *)PyBytes_AS_STRING(prev), PyBytes_GET_SIZE(prev)))
            return -1;
        op->prev = (const unsigned char *)PyBytes_AS_STRING(prev);
    }
    return 0;
}

/* invert(data, ops) -> bytes | None */
static PyObject *CarIndex_invert(CarIndex *self, PyObject *args) {
    Py_buffer data;
    PyObject *ops_arg;
    if (!PyArg_ParseTuple(args, "y*O", &data, &ops_arg)) return NULL;
    PyObject *ops_seq = PySequence_Fast(ops_arg, "ops must be a sequence");
    if (!ops_seq) {
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ops_seq);
    MOp stack_ops[16];
    MOp *ops = n <= 16 ? stack_ops : PyMem_RawMalloc((size_t)n * sizeof(MOp));
    MTree t = {self, {NULL}, {NULL, NULL}, 0, {0}};
    int rc = ops ? 0 : -2;
    if (data.len != CID_LEN || memcmp(data.buf, CID_PREFIX, 4) != 0) rc = -1;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++)
        rc = read_op(PySequence_Fast_GET_ITEM(ops_seq, i), &ops[i]);
    const unsigned char *root = NULL;
    unsigned char empty_cid[CID_LEN];
    if (rc == 0) {
        t.root.cid = data.buf;
        rc = invert(&t, ops, (size_t)n, &root, empty_cid);
    }
    PyObject *result;
    if (rc == -2)
        result = PyErr_NoMemory();
    else if (rc < 0)
        result = Py_NewRef(Py_None);
    else
        result = PyBytes_FromStringAndSize((const char *)root, CID_LEN);
    arena_free(&t.arena);
    buf_free(&t.scratch);
    if (ops && ops != stack_ops) PyMem_RawFree(ops);
    Py_DECREF(ops_seq);
    PyBuffer_Release(&data);
    return result;
}

/* ---------------------------------------------------------------- the slice and its records */

/* check_all() -> bool: every block matches its CID. */
static PyObject *CarIndex_check_all(CarIndex *self, PyObject *unused) {
    for (size_t i = 0; i <= self->mask; i++) {
        Slot *s = &self->slots[i];
        if (s->cid && !slot_verified(self, s)) Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* (json, created) of the record block at `cid` (checked against it), None when this code
   is not sure about it, NULL on a Python error. */
static PyObject *record_tuple(CarIndex *self, const unsigned char *cid, Py_ssize_t max_bytes) {
    Slot *s = verified_block(self, cid);
    if (!s || s->len > max_bytes || s->len == 0 || (s->data[0] >> 5) != 5) Py_RETURN_NONE;
    Reader r = {s->data, 0, (size_t)s->len};
    Buf b = {0};
    Found found = {NULL, 0};
    int rc = put_item(&b, &r, 0, &found);
    PyObject *result = NULL;
    if (rc == -2) {
        PyErr_NoMemory();
    } else if (rc < 0 || r.pos != r.end) {
        result = Py_NewRef(Py_None);
    } else {
        PyObject *text = PyUnicode_DecodeUTF8(b.data ? b.data : "", (Py_ssize_t)b.len, NULL);
        PyObject *created = NULL;
        int64_t us = 0;
        if (!found.created)
            created = Py_NewRef(Py_None);
        else if (found.created_len && found.created[found.created_len - 1] == 'Z' &&
                 atproto_datetime(found.created, found.created_len, &us) == 1)
            created = PyLong_FromLongLong(us);
        else
            created = PyUnicode_DecodeUTF8((const char *)found.created,
                                           (Py_ssize_t)found.created_len, NULL);
        if (text && created) result = PyTuple_Pack(2, text, created);
        Py_XDECREF(text);
        Py_XDECREF(created);
    }
    buf_free(&b);
    return result;
}

/* record(cid, max_bytes) -> (json, created) | None */
static PyObject *CarIndex_record(CarIndex *self, PyObject *args) {
    Py_buffer cid;
    Py_ssize_t max_bytes;
    if (!PyArg_ParseTuple(args, "y*n", &cid, &max_bytes)) return NULL;
    PyObject *result = cid.len == CID_LEN ? record_tuple(self, cid.buf, max_bytes)
                                          : Py_NewRef(Py_None);
    PyBuffer_Release(&cid);
    return result;
}

#undef TRY

/*
 * The event stream's `#commit` frame in one call: _fastrepo's reader of a whole websocket
 * message. Included by _fastrepo.c (one translation unit: it uses that file's block index,
 * DAG-CBOR reader and JSON writer, and _fastrepo_slice.h's record reader).
 *
 * commit_event(message, max_frame, max_record, nsid_ok, keep, check) reads a `#commit`
 * event as stream/frames.py's `decode_frame` reads it and, with `check`, checks its CAR
 * slice as stream/commit.py's `verify_commit(frame, None, check_proof=False)` checks it:
 *
 *   (seq, repo, rev, since, commit, blocks, time, prev_data, too_big, rebase, ops, checked)
 *
 * ops: a tuple of (action, path, cid, prev); checked: None (not asked, a `tooBig` commit,
 * or a slice this code is not sure about, which the Python path then checks), else
 * (commit_cid_text, data, puts, deletes), puts a tuple of (action, collection, rkey,
 * cid_text, json, created) as CarIndex.record gives `created`, deletes a tuple of
 * (collection, rkey), both in op order and only of the collections `keep` accepts.
 *
 * As everywhere in this module, the Python code is the definition and this code answers
 * only for a frame that is plainly valid: None for anything else (another event type, an
 * error frame, a DID other than a plain did:plc, a non-canonical or unusual value, a
 * float, a key out of order...), which the caller then reads with libipld. Whatever this
 * code accepts, libipld accepts and reads the same: every text is strict UTF-8, every map
 * in canonical key order, every head minimal, every link a CIDv1 sha-256.
 */

#define MAX_EVENT_OPS 1024

/* One value of any kind a frame may hold, checked as strictly as libipld reads it (and
   more: floats and tags other than 42 are declined); -1 otherwise. */
static int skip_strict(Reader *r, int depth);

/* A map's next key, text in canonical order after (*prev, *prev_len); -1 otherwise. */
static int next_key(Reader *r, const unsigned char **k, size_t *kn, const unsigned char **prev,
                    size_t *prev_len) {
    if (read_text(r, k, kn) < 0 || !utf8_ok(*k, *kn)) return -1;
    if (*prev && (*kn < *prev_len || (*kn == *prev_len && memcmp(*prev, *k, *kn) >= 0)))
        return -1;
    *prev = *k;
    *prev_len = *kn;
    return 0;
}

static int skip_strict(Reader *r, int depth) {
    int major;
    uint64_t arg;
    if (depth > 64 || r->pos >= r->end) return -1;
    unsigned char ib = r->p[r->pos];
    if (ib >= 0xf4 && ib <= 0xf6) { /* false, true, null */
        r->pos++;
        return 0;
    }
    if (read_head(r, &major, &arg) < 0) return -1;
    switch (major) {
    case 0:
        return arg <= (uint64_t)INT64_MAX ? 0 : -1;
    case 1:
        return arg <= (uint64_t)INT64_MAX ? 0 : -1;
    case 2:
        if (arg > r->end - r->pos) return -1;
        r->pos += (size_t)arg;
        return 0;
    case 3: {
        if (arg > r->end - r->pos || !utf8_ok(r->p + r->pos, (size_t)arg)) return -1;
        r->pos += (size_t)arg;
        return 0;
    }
    case 4:
        for (uint64_t i = 0; i < arg; i++)
            if (skip_strict(r, depth + 1) < 0) return -1;
        return 0;
    case 5: {
        const unsigned char *prev = NULL, *k;
        size_t prev_len = 0, kn;
        for (uint64_t i = 0; i < arg; i++)
            if (next_key(r, &k, &kn, &prev, &prev_len) < 0 || skip_strict(r, depth + 1) < 0)
                return -1;
        return 0;
    }
    case 6: {
        const unsigned char *cid;
        return arg == 42 ? read_link_after_tag(r, &cid) : -1;
    }
    }
    return -1;
}

/* A link to a DAG-CBOR block (`frames._is_link`), or null (*cid = NULL) when `nullable`. */
static int read_dag_link(Reader *r, const unsigned char **cid, int nullable) {
    if (read_link_or_null(r, cid) < 0) return -1;
    if (!*cid) return nullable ? 0 : -1;
    return memcmp(*cid, CID_PREFIX, 4) == 0 ? 0 : -1;
}

/* Text, strict UTF-8. */
static int read_utf8(Reader *r, const unsigned char **s, size_t *n) {
    return read_text(r, s, n) == 0 && utf8_ok(*s, *n) ? 0 : -1;
}

/* null (0), false (0) or true (1); -1 otherwise. */
static int read_flag(Reader *r, int *flag) {
    if (r->pos >= r->end) return -1;
    unsigned char ib = r->p[r->pos++];
    if (ib == 0xf6 || ib == 0xf4) *flag = 0;
    else if (ib == 0xf5) *flag = 1;
    else return -1;
    return 0;
}

static inline int is_null(Reader *r) {
    if (r->pos < r->end && r->p[r->pos] == 0xf6) {
        r->pos++;
        return 1;
    }
    return 0;
}

/* `syntax.TID`: 13 characters of base32-sortable, the first of 2-7 or a-j. */
static int tid_ok(const unsigned char *s, size_t n) {
    if (n != 13 || !((s[0] >= '2' && s[0] <= '7') || (s[0] >= 'a' && s[0] <= 'j'))) return 0;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= '2' && s[i] <= '7') || (s[i] >= 'a' && s[i] <= 'z'))) return 0;
    return 1;
}

/* `syntax.is_valid_did`'s fast case: did:plc: then ASCII letters and digits (the others
   are left to the Python rule). */
static int plc_did_ok(const unsigned char *s, size_t n) {
    if (n <= 8 || n > 2048 || memcmp(s, "did:plc:", 8) != 0) return 0;
    for (size_t i = 8; i < n; i++) {
        unsigned char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

typedef struct {
    int action; /* 0 create, 1 update, 2 delete */
    const unsigned char *path, *cid, *prev;
    size_t path_len;
} EventOp;

typedef struct {
    int seen;
    uint64_t seq;
    const unsigned char *repo, *rev, *since, *commit, *blocks, *time, *prev_data;
    size_t repo_n, rev_n, since_n, blocks_n, time_n;
    int too_big, rebase;
    EventOp *ops;
    size_t n_ops;
} Event;

enum { SEEN_SEQ = 1, SEEN_REPO = 2, SEEN_REV = 4, SEEN_COMMIT = 8, SEEN_BLOCKS = 16,
       SEEN_TIME = 32, SEEN_OPS = 64, SEEN_ALL = 127 };

static int read_action(const unsigned char *s, size_t n) {
    if (n == 6 && memcmp(s, "create", 6) == 0) return 0;
    if (n == 6 && memcmp(s, "update", 6) == 0) return 1;
    if (n == 6 && memcmp(s, "delete", 6) == 0) return 2;
    return -1;
}

/* One op map: `frames._usual_ops`' checks. */
static int read_event_op(Reader *r, EventOp *op) {
    int major;
    uint64_t n;
    if (read_head(r, &major, &n) < 0 || major != 5) return -1;
    const unsigned char *prev_key = NULL, *k;
    size_t prev_len = 0, kn;
    op->action = -1;
    op->path = op->cid = op->prev = NULL;
    for (uint64_t i = 0; i < n; i++) {
        if (next_key(r, &k, &kn, &prev_key, &prev_len) < 0) return -1;
        if (is_key(k, kn, "cid")) {
            if (read_dag_link(r, &op->cid, 1) < 0) return -1;
        } else if (is_key(k, kn, "path")) {
            if (read_utf8(r, &op->path, &op->path_len) < 0) return -1;
        } else if (is_key(k, kn, "prev")) {
            if (read_dag_link(r, &op->prev, 1) < 0) return -1;
        } else if (is_key(k, kn, "action")) {
            const unsigned char *s;
            size_t sn;
            if (read_text(r, &s, &sn) < 0 || (op->action = read_action(s, sn)) < 0) return -1;
        } else if (skip_strict(r, 1) < 0) {
            return -1;
        }
    }
    if (op->action < 0 || !op->path) return -1;
    return (op->cid == NULL) == (op->action == 2) ? 0 : -1;
}

static int read_event_ops(Reader *r, Event *ev) {
    int major;
    uint64_t n;
    if (read_head(r, &major, &n) < 0 || major != 4 || n > MAX_EVENT_OPS) return -1;
    ev->ops = n ? PyMem_RawMalloc((size_t)n * sizeof(EventOp)) : NULL;
    if (n && !ev->ops) return -1;
    ev->n_ops = (size_t)n;
    for (size_t i = 0; i < ev->n_ops; i++)
        if (read_event_op(r, &ev->ops[i]) < 0) return -1;
    return 0;
}

/* The header {t: "#commit", op: 1}. */
static int read_commit_header(Reader *r) {
    int major;
    uint64_t n, op = 0;
    if (read_head(r, &major, &n) < 0 || major != 5) return -1;
    const unsigned char *prev = NULL, *k, *s;
    size_t prev_len = 0, kn, sn;
    int seen = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (next_key(r, &k, &kn, &prev, &prev_len) < 0) return -1;
        if (is_key(k, kn, "t")) {
            if (read_text(r, &s, &sn) < 0 || !is_key(s, sn, "#commit")) return -1;
            seen |= 1;
        } else if (is_key(k, kn, "op")) {
            if (read_head(r, &major, &op) < 0 || major != 0 || op != 1) return -1;
            seen |= 2;
        } else if (skip_strict(r, 1) < 0) {
            return -1;
        }
    }
    return seen == 3 ? 0 : -1;
}

/* One body field into `ev`; -1 where `frames._usual_commit` would not take the value. */
static int read_body_field(Reader *r, const unsigned char *k, size_t kn, Event *ev) {
    int major;
    uint64_t arg;
    if (is_key(k, kn, "seq")) {
        if (read_head(r, &major, &ev->seq) < 0 || major != 0 || ev->seq > (uint64_t)INT64_MAX)
            return -1;
        ev->seen |= SEEN_SEQ;
    } else if (is_key(k, kn, "repo")) {
        if (read_text(r, &ev->repo, &ev->repo_n) < 0 || !plc_did_ok(ev->repo, ev->repo_n))
            return -1;
        ev->seen |= SEEN_REPO;
    } else if (is_key(k, kn, "rev")) {
        if (read_text(r, &ev->rev, &ev->rev_n) < 0 || !tid_ok(ev->rev, ev->rev_n)) return -1;
        ev->seen |= SEEN_REV;
    } else if (is_key(k, kn, "since")) {
        if (!is_null(r) &&
            (read_text(r, &ev->since, &ev->since_n) < 0 || !tid_ok(ev->since, ev->since_n)))
            return -1;
    } else if (is_key(k, kn, "commit")) {
        if (read_dag_link(r, &ev->commit, 0) < 0) return -1;
        ev->seen |= SEEN_COMMIT;
    } else if (is_key(k, kn, "blocks")) {
        if (read_head(r, &major, &arg) < 0 || major != 2 || arg > r->end - r->pos) return -1;
        ev->blocks = r->p + r->pos;
        ev->blocks_n = (size_t)arg;
        r->pos += (size_t)arg;
        ev->seen |= SEEN_BLOCKS;
    } else if (is_key(k, kn, "time")) {
        if (read_utf8(r, &ev->time, &ev->time_n) < 0) return -1;
        ev->seen |= SEEN_TIME;
    } else if (is_key(k, kn, "prevData")) {
        if (read_dag_link(r, &ev->prev_data, 1) < 0) return -1;
    } else if (is_key(k, kn, "tooBig")) {
        if (read_flag(r, &ev->too_big) < 0) return -1;
    } else if (is_key(k, kn, "rebase")) {
        if (read_flag(r, &ev->rebase) < 0) return -1;
    } else if (is_key(k, kn, "ops")) {
        if (read_event_ops(r, ev) < 0) return -1;
        ev->seen |= SEEN_OPS;
    } else {
        return skip_strict(r, 1);
    }
    return 0;
}

static int read_commit_event(const unsigned char *p, size_t size, Event *ev) {
    Reader r = {p, 0, size};
    int major;
    uint64_t n;
    if (read_commit_header(&r) < 0) return -1;
    if (read_head(&r, &major, &n) < 0 || major != 5) return -1;
    const unsigned char *prev = NULL, *k;
    size_t prev_len = 0, kn;
    for (uint64_t i = 0; i < n; i++)
        if (next_key(&r, &k, &kn, &prev, &prev_len) < 0 || read_body_field(&r, k, kn, ev) < 0)
            return -1;
    return ev->seen == SEEN_ALL && r.pos == r.end ? 0 : -1;
}

/* ---------------------------------------------------------------- the slice, checked */

/* The commit block {data, did, rev, version: 3, ...} (`repo.read_commit` without a key):
   0 with *data, or -1. */
static int read_event_commit(CarIndex *idx, const Event *ev, const unsigned char **data) {
    Slot *s = verified_block(idx, ev->commit);
    if (!s) return -1;
    Reader r = {s->data, 0, (size_t)s->len};
    int major;
    uint64_t n, version = 0;
    if (read_head(&r, &major, &n) < 0 || major != 5) return -1;
    const unsigned char *prev = NULL, *k, *did = NULL, *rev = NULL;
    size_t prev_len = 0, kn, did_n = 0, rev_n = 0;
    *data = NULL;
    for (uint64_t i = 0; i < n; i++) {
        if (next_key(&r, &k, &kn, &prev, &prev_len) < 0) return -1;
        if (is_key(k, kn, "did")) {
            if (read_utf8(&r, &did, &did_n) < 0) return -1;
        } else if (is_key(k, kn, "rev")) {
            if (read_utf8(&r, &rev, &rev_n) < 0) return -1;
        } else if (is_key(k, kn, "data")) {
            if (read_dag_link(&r, data, 0) < 0) return -1;
        } else if (is_key(k, kn, "version")) {
            if (read_head(&r, &major, &version) < 0 || major != 0) return -1;
        } else if (skip_strict(&r, 1) < 0) {
            return -1;
        }
    }
    if (r.pos != r.end || !did || !rev || !*data || version != 3) return -1;
    if (did_n != ev->repo_n || memcmp(did, ev->repo, did_n) != 0) return -1;
    return rev_n == ev->rev_n && memcmp(rev, ev->rev, rev_n) == 0 ? 0 : -1;
}

static PyObject *cid_text(const unsigned char *cid) {
    Buf b = {0};
    if (put_cid_text(&b, cid) < 0) return PyErr_NoMemory();
    PyObject *text = PyUnicode_FromStringAndSize(b.data, (Py_ssize_t)b.len);
    buf_free(&b);
    return text;
}

static PyObject *ACTION_TEXT[3]; /* "create", "update", "delete" */

/* Call `fn(arg)`: 1 true, 0 false, -2 error. */
static int truth_of(PyObject *fn, PyObject *arg) {
    PyObject *res = PyObject_CallOneArg(fn, arg);
    if (!res) return -2;
    int truth = PyObject_IsTrue(res);
    Py_DECREF(res);
    return truth < 0 ? -2 : truth;
}

static PyObject *made(int kind, PyObject **values);
enum { MADE_FRAME, MADE_OP, MADE_VERIFIED, MADE_PUT, MADE_DELETE, N_MADE };
static PyObject *CREATED_OF; /* Python's rule for a createdAt the C parser leaves as text */
static PyObject *SKIPPED;    /* the proof of a commit checked without it: "skipped" */

static void civil_from_days(int64_t z, int *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* A record's createdAt as CarIndex.record gives it, as `commit.created_at_of` makes it: a
   UTC datetime from microseconds since the epoch, the Python rule's for a text, or None. */
static PyObject *created_value(PyObject *created) {
    if (created == Py_None) return Py_NewRef(Py_None);
    if (!PyLong_CheckExact(created)) return PyObject_CallOneArg(CREATED_OF, created);
    long long us = PyLong_AsLongLong(created);
    if (us == -1 && PyErr_Occurred()) return NULL;
    const long long per_day = 86400LL * 1000000LL;
    long long days = us / per_day, rest = us % per_day;
    if (rest < 0) {
        rest += per_day;
        days--;
    }
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    long long seconds = rest / 1000000;
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        y, m, d, (int)(seconds / 3600), (int)(seconds / 60 % 60), (int)(seconds % 60),
        (int)(rest % 1000000), PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
}

/* One op's put or delete appended to `puts`/`deletes` (`commit._decode_ops`); 0, -1 to
   decline, -2 on a Python error. */
static int check_op(CarIndex *idx, const EventOp *op, PyObject *nsid_ok, PyObject *keep,
                    Py_ssize_t max_record, PyObject *puts, PyObject *deletes) {
    const unsigned char *slash = memchr(op->path, '/', op->path_len);
    if (!slash) return -1;
    size_t coll_n = (size_t)(slash - op->path), rkey_n = op->path_len - coll_n - 1;
    if (!rkey_ok(slash + 1, rkey_n)) return -1;
    PyObject *collection = PyUnicode_FromStringAndSize((const char *)op->path, (Py_ssize_t)coll_n);
    if (!collection) return -2;
    PyObject *item = NULL;
    int rc = truth_of(nsid_ok, collection), kept = 1;
    if (rc == 1 && keep != Py_None) kept = truth_of(keep, collection);
    if (rc != 1 || kept < 0) {
        rc = rc == 0 ? -1 : -2;
        goto done;
    }
    rc = 0;
    if (op->action == 2) {
        if (kept) {
            PyObject *v[2] = {Py_NewRef(collection),
                              PyUnicode_FromStringAndSize((const char *)slash + 1,
                                                          (Py_ssize_t)rkey_n)};
            item = made(MADE_DELETE, v);
            rc = item && PyList_Append(deletes, item) == 0 ? 0 : -2;
        }
        goto done;
    }
    if (!kept) { /* checked, not decoded (commit._records_in) */
        Slot *s = verified_block(idx, op->cid);
        rc = s && s->len <= max_record ? 0 : -1;
        goto done;
    }
    PyObject *found = record_tuple(idx, op->cid, max_record);
    if (!found || found == Py_None) {
        rc = found ? -1 : -2;
        Py_XDECREF(found);
        goto done;
    }
    PyObject *v[6] = {
        Py_NewRef(ACTION_TEXT[op->action]),
        Py_NewRef(collection),
        PyUnicode_FromStringAndSize((const char *)slash + 1, (Py_ssize_t)rkey_n),
        cid_text(op->cid),
        Py_NewRef(PyTuple_GET_ITEM(found, 0)),
        created_value(PyTuple_GET_ITEM(found, 1)),
    };
    Py_DECREF(found);
    item = made(MADE_PUT, v);
    rc = item && PyList_Append(puts, item) == 0 ? 0 : -2;
done:
    Py_XDECREF(item);
    Py_DECREF(collection);
    return rc;
}

/* Each op's path once (`commit._split_path`'s `seen`). */
static int paths_unique(const Event *ev) {
    for (size_t i = 1; i < ev->n_ops; i++)
        for (size_t j = 0; j < i; j++)
            if (ev->ops[i].path_len == ev->ops[j].path_len &&
                memcmp(ev->ops[i].path, ev->ops[j].path, ev->ops[i].path_len) == 0)
                return 0;
    return 1;
}

/* The VerifiedCommit of the event (`rev` its frame's), None to decline, NULL on a Python
   error. */
static PyObject *checked_slice(const Event *ev, PyObject *rev, PyObject *nsid_ok,
                               PyObject *keep, Py_ssize_t max_record) {
    CarIndex idx;
    memset(&idx, 0, sizeof idx);
    idx.base = ev->blocks;
    idx.size = (Py_ssize_t)ev->blocks_n;
    PyObject *result = NULL, *puts = NULL, *deletes = NULL;
    const unsigned char *data;
    int rc = index_car(&idx);
    if (rc == -2) {
        PyErr_NoMemory();
        goto done;
    }
    if (rc < 0 || memcmp(idx.root, ev->commit, CID_LEN) != 0 || !paths_unique(ev)) goto declined;
    for (size_t i = 0; i <= idx.mask; i++)
        if (idx.slots[i].cid && !slot_verified(&idx, &idx.slots[i])) goto declined;
    if (read_event_commit(&idx, ev, &data) < 0) goto declined;
    puts = PyList_New(0);
    deletes = PyList_New(0);
    if (!puts || !deletes) goto done;
    for (size_t i = 0; i < ev->n_ops; i++) {
        rc = check_op(&idx, &ev->ops[i], nsid_ok, keep, max_record, puts, deletes);
        if (rc == -2) goto done;
        if (rc < 0) goto declined;
    }
    PyObject *v[6] = {
        Py_NewRef(rev),
        cid_text(ev->commit),
        PyBytes_FromStringAndSize((const char *)data, CID_LEN),
        PyList_AsTuple(puts),
        PyList_AsTuple(deletes),
        Py_NewRef(SKIPPED),
    };
    result = made(MADE_VERIFIED, v);
    goto done;
declined:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(puts);
    Py_XDECREF(deletes);
    PyMem_RawFree(idx.slots);
    return result;
}

/* ---------------------------------------------------------------- the result */

/* The classes the result is made of (frozen dataclasses with slots: CommitFrame, RepoOp,
   VerifiedCommit, CommitPut, CommitDelete), bound once by bind_commit_types: an instance
   is allocated and its slots filled directly, in the order the fields were named (what
   `slots.new` and the slots' setters do in Python, without a call per field). */
#define MAX_FIELDS 12
typedef struct {
    PyTypeObject *cls;
    Py_ssize_t offset[MAX_FIELDS];
    Py_ssize_t n;
} Made;

static const Py_ssize_t MADE_FIELDS[N_MADE] = {11, 4, 6, 6, 2};
static Made MADE[N_MADE];

static int bind_made(Made *m, PyObject *spec, Py_ssize_t fields) {
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(spec, "O!O!", &PyType_Type, &cls, &PyTuple_Type, &names)) return -1;
    if (PyTuple_GET_SIZE(names) != fields) {
        PyErr_Format(PyExc_TypeError, "%R: %zd fields, not %zd", cls, PyTuple_GET_SIZE(names),
                     fields);
        return -1;
    }
    for (Py_ssize_t i = 0; i < fields; i++) {
        PyObject *descr = PyObject_GetAttr(cls, PyTuple_GET_ITEM(names, i));
        if (!descr) return -1;
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                 ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        if (ok) m->offset[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%R.%S is not a slot", cls, PyTuple_GET_ITEM(names, i));
            return -1;
        }
    }
    Py_XSETREF(m->cls, (PyTypeObject *)Py_NewRef(cls));
    m->n = fields;
    return 0;
}

/* bind_commit_types(frame, op, verified, put, delete, created_of, skipped): each class as
   (cls, field names in the order commit_event fills them). */
static PyObject *bind_commit_types(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *specs[N_MADE], *created_of, *skipped;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OU", &PyTuple_Type, &specs[0], &PyTuple_Type,
                          &specs[1], &PyTuple_Type, &specs[2], &PyTuple_Type, &specs[3],
                          &PyTuple_Type, &specs[4], &created_of, &skipped))
        return NULL;
    for (int i = 0; i < N_MADE; i++)
        if (bind_made(&MADE[i], specs[i], MADE_FIELDS[i]) < 0) return NULL;
    Py_XSETREF(CREATED_OF, Py_NewRef(created_of));
    Py_XSETREF(SKIPPED, Py_NewRef(skipped));
    Py_RETURN_NONE;
}

/* An instance of MADE[kind] holding `values` (references stolen, also on failure; a NULL
   among them fails it). */
static PyObject *made(int kind, PyObject **values) {
    Made *m = &MADE[kind];
    PyObject *obj = NULL;
    int complete = 1;
    for (Py_ssize_t i = 0; i < m->n; i++) complete &= values[i] != NULL;
    if (complete) obj = m->cls->tp_alloc(m->cls, 0);
    for (Py_ssize_t i = 0; i < m->n; i++) {
        if (obj)
            *(PyObject **)((char *)obj + m->offset[i]) = values[i];
        else
            Py_XDECREF(values[i]);
    }
    return obj;
}

static PyObject *text_of(const unsigned char *s, size_t n) {
    return PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, NULL);
}

static PyObject *link_or_none(const unsigned char *cid) {
    if (!cid) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)cid, CID_LEN);
}

static PyObject *ops_tuple(const Event *ev) {
    PyObject *ops = PyTuple_New((Py_ssize_t)ev->n_ops);
    if (!ops) return NULL;
    for (size_t i = 0; i < ev->n_ops; i++) {
        const EventOp *op = &ev->ops[i];
        PyObject *v[4] = {Py_NewRef(ACTION_TEXT[op->action]), text_of(op->path, op->path_len),
                          link_or_none(op->cid), link_or_none(op->prev)};
        PyObject *item = made(MADE_OP, v);
        if (!item) {
            Py_DECREF(ops);
            return NULL;
        }
        PyTuple_SET_ITEM(ops, (Py_ssize_t)i, item);
    }
    return ops;
}

/* The CommitFrame of `ev`, its rev the text `rev` (borrowed; the VerifiedCommit's too). */
static PyObject *frame_of(const Event *ev, PyObject *rev) {
    PyObject *v[11] = {
        PyLong_FromUnsignedLongLong(ev->seq),
        text_of(ev->repo, ev->repo_n),
        Py_NewRef(rev),
        ev->since ? text_of(ev->since, ev->since_n) : Py_NewRef(Py_None),
        link_or_none(ev->commit),
        PyBytes_FromStringAndSize((const char *)ev->blocks, (Py_ssize_t)ev->blocks_n),
        ops_tuple(ev),
        text_of(ev->time, ev->time_n),
        link_or_none(ev->prev_data),
        PyBool_FromLong(ev->too_big),
        PyBool_FromLong(ev->rebase),
    };
    return made(MADE_FRAME, v);
}

/* commit_event(message, max_frame, max_record, nsid_ok, keep, check)
   -> (CommitFrame, VerifiedCommit | None) | None */
static PyObject *commit_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) return PyErr_Format(PyExc_TypeError, "commit_event takes 6 arguments");
    if (!MADE[MADE_FRAME].cls) return PyErr_Format(PyExc_RuntimeError, "bind_commit_types first");
    PyObject *message = args[0], *nsid_ok = args[3], *keep = args[4];
    Py_ssize_t max_frame = PyLong_AsSsize_t(args[1]), max_record = PyLong_AsSsize_t(args[2]);
    int check = PyObject_IsTrue(args[5]);
    if ((max_frame == -1 || max_record == -1 || check < 0) && PyErr_Occurred()) return NULL;
    if (!PyBytes_Check(message) || PyBytes_GET_SIZE(message) > max_frame) Py_RETURN_NONE;
    Event ev;
    memset(&ev, 0, sizeof ev);
    PyObject *result = NULL, *rev = NULL, *frame = NULL, *checked = NULL;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(message);
    if (read_commit_event(p, (size_t)PyBytes_GET_SIZE(message), &ev) < 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    rev = text_of(ev.rev, ev.rev_n);
    frame = rev ? frame_of(&ev, rev) : NULL;
    if (!frame) goto done;
    checked = check && !ev.too_big ? checked_slice(&ev, rev, nsid_ok, keep, max_record)
                                   : Py_NewRef(Py_None);
    if (checked) result = PyTuple_Pack(2, frame, checked);
done:
    Py_XDECREF(rev);
    Py_XDECREF(frame);
    Py_XDECREF(checked);
    PyMem_RawFree(ev.ops);
    return result;
}

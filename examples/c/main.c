/*
 * funcx from C: local Python workers, JSON arguments and results, pickle bytes, errors,
 * timeouts, cancellation, and several threads on one executor.
 *
 * Built and run by examples/c/run.sh. Every check prints what it saw; the program exits 0
 * only if all hold.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "funcx.h"

static int failures = 0;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (cond) {                                                               \
            printf("ok   ");                                                      \
        } else {                                                                  \
            printf("FAIL ");                                                      \
            failures++;                                                           \
        }                                                                         \
        printf(__VA_ARGS__);                                                      \
        printf("\n");                                                             \
    } while (0)

/* Waits (at most 30 s) for a JSON result; returns it (free with funcx_string_free) or NULL
 * with *error set. */
static char *wait_json(FuncxTask *task, FuncxError **error) {
    char *json = NULL;
    FuncxStatus status = funcx_task_wait_json(task, 30000, &json, error);
    if (status == FUNCX_STATUS_PENDING) {
        fprintf(stderr, "task %llu still pending after 30 s\n",
                (unsigned long long)funcx_task_id(task));
    }
    return status == FUNCX_STATUS_OK ? json : NULL;
}

/* Submits add(args) and checks the JSON result. */
static void expect_json(FuncxExecutor *executor, FuncxFunction *function, const char *args,
                        const char *expected) {
    FuncxError *error = NULL;
    FuncxTask *task = funcx_submit_json(executor, function, args, &error);
    char *json = task ? wait_json(task, &error) : NULL;
    CHECK(json && strcmp(json, expected) == 0, "%s -> %s (expected %s)%s%s", args,
          json ? json : "(none)", expected, error ? ": " : "",
          error ? funcx_error_message(error) : "");
    funcx_string_free(json);
    funcx_error_free(error);
    funcx_task_free(task);
}

struct worker {
    FuncxExecutor *executor;
    FuncxFunction *function;
    int index;
    int correct;
};

/* One of several threads sharing an executor: 50 calls, each checked. */
static void *thread_main(void *arg) {
    struct worker *w = arg;
    for (int i = 0; i < 50; i++) {
        char args[64], expected[64];
        snprintf(args, sizeof args, "[%d, %d]", w->index * 1000, i);
        snprintf(expected, sizeof expected, "%d", w->index * 1000 + i);
        FuncxError *error = NULL;
        FuncxTask *task = funcx_submit_json(w->executor, w->function, args, &error);
        char *json = task ? wait_json(task, &error) : NULL;
        if (json && strcmp(json, expected) == 0) {
            w->correct++;
        }
        funcx_string_free(json);
        funcx_error_free(error);
        funcx_task_free(task);
    }
    return NULL;
}

int main(void) {
    FuncxError *error = NULL;
    FuncxExecutor *executor = funcx_executor_new_local(2, NULL, &error);
    if (!executor) {
        fprintf(stderr, "cannot start the workers: %s\n", funcx_error_message(error));
        funcx_error_free(error);
        return 1;
    }
    printf("ok   2 local Python workers started\n");

    FuncxFunction *add =
        funcx_function_new("def add(a, b=0):\n    return a + b\n", "add", NULL);
    FuncxFunction *stats = funcx_function_new(
        "def stats(xs):\n    return {'n': len(xs), 'sum': sum(xs), 'max': max(xs)}\n", "stats",
        NULL);
    FuncxFunction *sleepy = funcx_function_new(
        "import time\n\ndef sleepy(s):\n    time.sleep(s)\n    return s\n", "sleepy", NULL);
    FuncxFunction *divide = funcx_function_new("def divide(a, b):\n    return a / b\n",
                                               "divide", NULL);
    FuncxFunction *broken = funcx_function_new("def broken(:\n", "broken", NULL);
    FuncxFunction *echo = funcx_function_new("def echo(x):\n    return x\n", "echo", NULL);
    CHECK(add && stats && sleepy && divide && broken && echo, "functions made");

    /* JSON in, JSON out: positional, keyword, strings, lists and dicts. */
    expect_json(executor, add, "[2, 3]", "5");
    expect_json(executor, add, "{\"args\": [10], \"kwargs\": {\"b\": 32}}", "42");
    expect_json(executor, add, "[\"fun\", \"cx\"]", "\"funcx\"");
    expect_json(executor, add, "[[1, 2], [3]]", "[1,2,3]");
    expect_json(executor, stats, "[[4, 8, 15, 16, 23, 42]]", "{\"max\":42,\"n\":6,\"sum\":108}");

    /* A Python exception: kind and message (with its traceback). */
    FuncxTask *task = funcx_submit_json(executor, divide, "[1, 0]", NULL);
    char *json = NULL;
    FuncxStatus status = funcx_task_wait_json(task, 30000, &json, &error);
    CHECK(status == FUNCX_STATUS_FAILED && funcx_error_kind(error) == FUNCX_ERROR_KIND_PYTHON &&
              strstr(funcx_error_message(error), "ZeroDivisionError") != NULL,
          "1 / 0 fails as a Python error: %s", error ? funcx_error_message(error) : "(none)");
    funcx_error_free(error);
    error = NULL;
    funcx_task_free(task);

    /* A function that does not load. */
    task = funcx_submit_json(executor, broken, "[]", NULL);
    status = funcx_task_wait_json(task, 30000, NULL, &error);
    CHECK(status == FUNCX_STATUS_FAILED && funcx_error_kind(error) == FUNCX_ERROR_KIND_LOAD,
          "a syntax error fails as a load error: %s", error ? funcx_error_message(error) : "");
    funcx_error_free(error);
    error = NULL;
    funcx_task_free(task);

    /* Bad arguments are refused at once, with the reason. */
    task = funcx_submit_json(executor, add, "[1, 2", &error);
    CHECK(task == NULL && funcx_error_kind(error) == FUNCX_ERROR_KIND_INVALID_ARGUMENT,
          "malformed JSON refused: %s", error ? funcx_error_message(error) : "");
    funcx_error_free(error);
    error = NULL;
    task = funcx_submit_json(executor, NULL, "[]", &error);
    CHECK(task == NULL && funcx_error_kind(error) == FUNCX_ERROR_KIND_INVALID_ARGUMENT,
          "a NULL function refused: %s", error ? funcx_error_message(error) : "");
    funcx_error_free(error);
    error = NULL;

    /* A timeout on the wait leaves the task running; cancel stops it. */
    task = funcx_submit_json(executor, sleepy, "[60]", NULL);
    status = funcx_task_wait_json(task, 200, &json, &error);
    CHECK(status == FUNCX_STATUS_PENDING && error == NULL, "a 60 s task is pending after 200 ms");
    funcx_task_cancel(task);
    status = funcx_task_wait_json(task, 30000, &json, &error);
    CHECK(status == FUNCX_STATUS_FAILED && funcx_error_kind(error) == FUNCX_ERROR_KIND_CANCELLED,
          "then cancelled: %s", error ? funcx_error_message(error) : "");
    funcx_error_free(error);
    error = NULL;
    funcx_task_free(task);

    /* Pickle bytes both ways: protocol 2 pickle of the bytes b"\x00\x01\x02" goes in, and
     * comes back as a pickle that C hands on untouched. */
    static const unsigned char pickled[] = {0x80, 0x03, 'C', 0x03, 0x00, 0x01, 0x02, 'q', 0x00, '.'};
    task = funcx_submit_pickle(executor, echo, pickled, sizeof pickled, NULL);
    unsigned char *data = NULL;
    size_t len = 0;
    status = funcx_task_wait_pickle(task, 30000, &data, &len, &error);
    CHECK(status == FUNCX_STATUS_OK && len > 0 && data[len - 1] == '.',
          "bytes echoed as a %zu-byte pickle", len);
    funcx_bytes_free(data, len);
    /* The same result cannot be JSON: said so, and waiting again gives the same outcome. */
    status = funcx_task_wait_json(task, 0, &json, &error);
    CHECK(status == FUNCX_STATUS_FAILED &&
              funcx_error_kind(error) == FUNCX_ERROR_KIND_SERIALIZATION,
          "bytes are not JSON: %s", error ? funcx_error_message(error) : "");
    funcx_error_free(error);
    error = NULL;
    funcx_task_free(task);

    /* Four threads on one executor at once. */
    pthread_t threads[4];
    struct worker workers[4];
    for (int t = 0; t < 4; t++) {
        workers[t] = (struct worker){executor, add, t, 0};
        pthread_create(&threads[t], NULL, thread_main, &workers[t]);
    }
    int correct = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        correct += workers[t].correct;
    }
    CHECK(correct == 200, "4 threads x 50 calls: %d correct", correct);

    /* A gateway that is not there: a clear error, no executor. */
    FuncxExecutor *remote =
        funcx_executor_new_remote("http://127.0.0.1:9", "token", "endpoint", &error);
    CHECK(remote == NULL && funcx_error_kind(error) == FUNCX_ERROR_KIND_REMOTE,
          "an unreachable gateway: %s", error ? funcx_error_message(error) : "");
    funcx_error_free(error);
    error = NULL;

    /* After shutdown, new tasks are refused. */
    funcx_executor_shutdown(executor);
    task = funcx_submit_json(executor, add, "[1, 1]", NULL);
    status = funcx_task_wait_json(task, 30000, &json, &error);
    CHECK(status == FUNCX_STATUS_FAILED && funcx_error_kind(error) == FUNCX_ERROR_KIND_SHUTDOWN,
          "refused after shutdown: %s", error ? funcx_error_message(error) : "");
    funcx_error_free(error);
    funcx_task_free(task);

    funcx_function_free(add);
    funcx_function_free(stats);
    funcx_function_free(sleepy);
    funcx_function_free(divide);
    funcx_function_free(broken);
    funcx_function_free(echo);
    funcx_executor_free(executor);

    printf("%s: %d failed\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}

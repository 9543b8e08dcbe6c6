/* Loud assertions: a failed check prints where and why and exits 1. C and
 * C++ (test_unwind.cpp) alike. */
#ifndef WXTEST_CHECK_H
#define WXTEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__,  \
                    #cond);                                                   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define CHECK_EQ(a, b)                                                        \
    do {                                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                   \
        CHECK(a_ == b_, "%s is %lld, expected %lld", #a, a_, b_);             \
    } while (0)

/* An API call that must return err (0 for success). */
#define CHECK_RET(call, err)                                                  \
    do {                                                                      \
        int got_ = (call), want_ = (err);                                     \
        CHECK(got_ == want_, "returned %d (%s), expected %d (%s)", got_,      \
              strerror(got_), want_, strerror(want_));                        \
    } while (0)

#define CHECK_OK(call) CHECK_RET(call, 0)

#endif

#pragma once
// Test support: the shipped Catch2 helpers of the test kit (TestLoop, STRATA_LOOP_TEST_CASE).

#include <strata/testing/catch2.hpp>

# frozen_string_literal: true

require_relative "test_helper"

# What the gateway would refuse, the bridge refuses when minting.
class TokenTest < Minitest::Test
  SECRET = "s" * 32

  def test_secrets_under_32_bytes_are_refused
    ["short", "s" * 31, "é" * 15].each do |secret|
      error = assert_raises(ArgumentError) { Pushgate::Token.connection(secret, 1, ttl: 60) }
      assert_match(/at least 32/, error.message)
      assert_raises(ArgumentError) { Pushgate::Token.subscription(secret, 1, "private:x", ttl: 60) }
    end
    assert_raises(ArgumentError) { Pushgate::Token.connection(nil, 1, ttl: 60) }
    assert Pushgate::Token.connection(SECRET, 1, ttl: 60)
  end

  def test_no_subscription_token_for_a_personal_channel
    error = assert_raises(ArgumentError) { Pushgate::Token.subscription(SECRET, 42, "#42", ttl: 60) }
    assert_match(/personal channel/, error.message)
    assert_raises(ArgumentError) { Pushgate::Token.subscription(SECRET, 1, "#42", ttl: 60) }
  end

  def test_ttls_under_one_second_are_refused
    [0, -1, -3600, 0.5, "600", true, Float::NAN].each do |ttl|
      error = assert_raises(ArgumentError, ttl.inspect) { Pushgate::Token.connection(SECRET, 1, ttl: ttl) }
      assert_match(/ttl must be at least 1 second/, error.message)
      assert_raises(ArgumentError) { Pushgate::Token.subscription(SECRET, 1, "private:x", ttl: ttl) }
    end
  end

  def test_nil_never_expires_and_whole_seconds_are_exact
    claims = ->(token) { JSON.parse(token.split(".")[1].tr("-_", "+/").unpack1("m")) }
    refute claims.call(Pushgate::Token.connection(SECRET, 1, ttl: nil, now: 1000)).key?("exp")
    assert_equal 1060, claims.call(Pushgate::Token.connection(SECRET, 1, ttl: 60, now: 1000))["exp"]
    assert_equal 1060, claims.call(Pushgate::Token.connection(SECRET, 1, ttl: 60.9, now: 1000))["exp"]
  end

  def test_the_module_api_refuses_a_short_configured_secret
    Pushgate.config.jwt_secret = "too-short"
    assert_raises(ArgumentError) { Pushgate.connection_token(1) }
  ensure
    Pushgate.config.jwt_secret = nil
  end
end

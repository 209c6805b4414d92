# frozen_string_literal: true

require_relative "test_helper"

# The shared vectors (bridges/testdata): the Ruby bridge must mint exactly the
# same tokens and envelope bytes as the gateway's reference implementation.
class VectorsTest < Minitest::Test
  TOKENS = JSON.parse(File.read(File.join(VECTORS, "tokens.json")))
  ENVELOPES = JSON.parse(File.read(File.join(VECTORS, "envelopes.json")))

  def test_connection_tokens
    TOKENS["connection"].each do |v|
      token = Pushgate::Token.connection(TOKENS["secret"], v["user"], ttl: v["ttl"], channels: v["channels"],
                                                                      info: v["info"], now: TOKENS["now"])
      assert_equal v["token"], token, v["name"]
    end
  end

  def test_subscription_tokens
    TOKENS["subscription"].each do |v|
      token = Pushgate::Token.subscription(TOKENS["secret"], v["user"], v["channel"], ttl: v["ttl"],
                                                                                   now: TOKENS["now"])
      assert_equal v["token"], token, v["name"]
    end
  end

  def test_module_api_mints_the_same_tokens
    Pushgate.config.jwt_secret = TOKENS["secret"]
    v = TOKENS["connection"][1]
    assert_equal v["token"], Pushgate.connection_token(v["user"], ttl: v["ttl"], channels: v["channels"],
                                                                  info: v["info"], now: TOKENS["now"])
    s = TOKENS["subscription"][0]
    assert_equal s["token"], Pushgate.subscription_token(s["user"], s["channel"], ttl: s["ttl"], now: TOKENS["now"])
  ensure
    Pushgate.config.jwt_secret = nil
  end

  def test_envelopes
    publisher = publisher_for("unused")
    ENVELOPES.each do |v|
      args = v["args"]
      envelope = v["call"] == "publish" ? args["envelope"] : args
      assert_equal v["bytes"], publisher.encode(envelope), v["name"]
    end
  end

  def test_bad_envelopes_raise
    publisher = publisher_for("unused")
    assert_raises(ArgumentError) { publisher.encode("data" => 1) }
    assert_raises(ArgumentError) { publisher.encode("channel" => "", "data" => 1) }
    assert_raises(ArgumentError) { publisher.encode("user" => true, "data" => 1) }
    assert_raises(ArgumentError) { publisher.encode("channel" => "a") }
    assert_raises(ArgumentError) { publisher.encode("channel" => "a", "data" => 1, "extra" => 2) }
    assert_raises(ArgumentError) { publisher.encode("user" => 1, "data" => 1, "receipt" => true) }  # no id
    assert_raises(ArgumentError) { publisher.encode("user" => 1, "data" => 1, "id" => "m", "receipt" => "yes") }
    assert_equal '{"user":"1","data":1,"id":"m"}', publisher.encode("user" => 1, "data" => 1, "id" => "m",
                                                                     "receipt" => false)
  end
end

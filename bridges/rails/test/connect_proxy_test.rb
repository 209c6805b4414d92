# frozen_string_literal: true

require "test_helper"
require "rack"
require "rack/session/cookie"


# The connect proxy endpoint answers from the session the browser's Cookie
# (passed on by the gateway) carries, read by the session middleware in
# front of it, as Rails' runs in front of a mounted Rack app.
class ConnectProxyTest < Minitest::Test
  SECRET = "connect-proxy-test-secret-" * 4
  REQUEST = { "client" => "9336a229-2400-4ebc-8c50-0a643d22e8a0", "transport" => "websocket",
              "protocol" => "json", "encoding" => "json" }.freeze

  def app(endpoint)
    Rack::Builder.new do
      use Rack::Session::Cookie, secret: SECRET, key: "_app_session"
      map("/login") { run ->(env) { env["rack.session"]["user_id"] = 42; [200, {}, ["ok"]] } }
      map("/centrifugo/connect") { run endpoint }
    end
  end

  def signed_in_cookie(stack)
    response = Rack::MockRequest.new(stack).get("/login")
    response.headers["Set-Cookie"].split(";").first
  end

  def proxy_call(stack, cookie, body = JSON.generate(REQUEST))
    Rack::MockRequest.new(stack).post("/centrifugo/connect", "HTTP_COOKIE" => cookie, input: body,
                                                             "CONTENT_TYPE" => "application/json")
  end

  def test_the_signed_in_user_is_the_connections_user
    stack = app(Pushgate::ConnectProxy.new(ttl: 600, info: ->(_request, user) { { "id" => user } }))
    response = proxy_call(stack, signed_in_cookie(stack))
    assert_equal 200, response.status
    answer = JSON.parse(response.body)
    assert_equal "42", answer["result"]["user"]
    assert_equal({ "id" => 42 }, answer["result"]["info"])
    assert_in_delta Time.now.to_i + 600, answer["result"]["expire_at"], 2
  end

  def test_nobody_signed_in_is_a_final_disconnect
    stack = app(Pushgate::ConnectProxy.new)
    response = proxy_call(stack, "")
    assert_equal({ "disconnect" => { "code" => 4501, "reason" => "unauthorized" } }, JSON.parse(response.body))
    forged = proxy_call(stack, "_app_session=forged")
    assert_equal 4501, JSON.parse(forged.body)["disconnect"]["code"]
  end

  def test_a_block_says_who_the_user_is
    stack = app(Pushgate::ConnectProxy.new { |request| request.env["rack.session"]["user_id"] && "u-7" })
    assert_equal "u-7", JSON.parse(proxy_call(stack, signed_in_cookie(stack)).body)["result"]["user"]
  end

  def test_only_a_post_with_a_json_object
    stack = app(Pushgate::ConnectProxy.new)
    assert_equal 405, Rack::MockRequest.new(stack).get("/centrifugo/connect").status
    assert_equal 400, proxy_call(stack, "", "[1]").status
    assert_equal 400, proxy_call(stack, "", "not json").status
  end
end

# The same endpoint in a real Rails application, from the Rails session.
class ConnectProxyRailsTest < Minitest::Test
  def test_a_rails_apps_signed_in_user_without_a_token_endpoint
    script = File.expand_path("support/connect_proxy_rails_app.rb", __dir__)
    output = IO.popen([RbConfig.ruby, script], err: %i[child out], &:read)
    answers = JSON.parse(output.lines.last)
    assert_equal 200, answers["status"]
    assert_equal "42", answers["signed_in"]["result"]["user"]
    assert_operator answers["signed_in"]["result"]["expire_at"], :>, Time.now.to_i
    assert_equal 4501, answers["anonymous"]["disconnect"]["code"]
    assert_equal 4501, answers["tampered"]["disconnect"]["code"]
  end
end

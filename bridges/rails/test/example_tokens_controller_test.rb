# frozen_string_literal: true

require "test_helper"
require "action_controller"

# The example app's token controller (examples/rails): subscription tokens
# only from its allow-list, never for a personal channel.
class ApplicationController < ActionController::Base; end
load File.join(ROOT, "examples", "rails", "app", "controllers", "pushgate_tokens_controller.rb")

class ExampleTokensControllerTest < Minitest::Test
  User = Struct.new(:id, :team_id, :admin, keyword_init: true) do
    def admin? = admin
  end

  def allowed?(user, channel)
    controller = PushgateTokensController.new
    controller.define_singleton_method(:current_user) { user }
    controller.send(:subscribable?, channel)
  end

  def test_grants_only_what_the_allow_list_says
    member = User.new(id: 42, team_id: 7, admin: false)
    admin = User.new(id: 1, team_id: nil, admin: true)
    assert allowed?(member, "private:team:7")
    refute allowed?(member, "private:team:8")
    refute allowed?(member, "private:billing")
    assert allowed?(admin, "private:billing")
    refute allowed?(member, "private:team:7x")
    refute allowed?(member, "anything:else")
  end

  def test_never_a_personal_channel
    admin = User.new(id: 1, team_id: 7, admin: true)
    refute allowed?(admin, "#42")
    refute allowed?(admin, "#1")
  end
end
